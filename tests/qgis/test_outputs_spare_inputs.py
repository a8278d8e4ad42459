"""No algorithm writes over its inputs: an output that resolves to an input, or to a file that goes
with one (.aux.xml, .qml style), is refused before the runtime starts, naming both parameters."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from qgis.core import QgsProcessingException

import processing


def _digest(folder: Path) -> dict:
    """The scene folder's files (the fake runtime's own call log and wrapper live there too: left out)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in ("calls.jsonl", "fake-python")}


def _cases(scene, tmp):
    model = str(tmp / "model.bdgf")
    Path(model).write_bytes(b"not run")
    spectral, sar, truth = scene["spectral"], scene["sar"], scene["groundtruth"]
    inputs = {"SPECTRAL": spectral, "SAR": sar}
    training = {**inputs, "GROUND_TRUTH": truth, "CLASS_FIELD": "class"}
    stem = os.path.splitext(spectral)[0]
    return [
        ("classify", {**inputs, "MODEL": model, "OUTPUT": spectral}, "OUTPUT", "SPECTRAL"),
        ("classify", {**inputs, "MODEL": model, "OUTPUT": str(tmp / "m.tif"), "CONFIDENCE": sar}, "CONFIDENCE", "SAR"),
        # spectral.tiff would write spectral.qml, the input's style
        ("classify", {**inputs, "MODEL": model, "OUTPUT": stem + ".tiff"}, "OUTPUT", "SPECTRAL"),
        ("classify", {**inputs, "MODEL": model, "OUTPUT": str(tmp / "m.tif"), "ENTROPY": model}, "ENTROPY", "MODEL"),
        ("pretrain", {**inputs, "MODEL": str(tmp / "d.bdgf"), "FEATURES": sar}, "FEATURES", "SAR"),
        ("train_baseline", {**training, "MODEL": truth, "REPORT": str(tmp / "r.html")}, "MODEL", "GROUND_TRUTH"),
        ("train_baseline", {**training, "MODEL": str(tmp / "n.bdgf"), "REPORT": truth}, "REPORT", "GROUND_TRUTH"),
        ("train", {**training, "FEATURES": sar, "MODEL": str(tmp / "n.bdgf"), "REPORT": spectral}, "REPORT", "SPECTRAL"),
        ("assess", {"MAP": spectral, "GROUND_TRUTH": truth, "CLASS_FIELD": "class", "REPORT": str(tmp / "a.html"),
                    "JSON": spectral + ".aux.xml"}, "JSON", "MAP"),
        ("assess", {"MAP": spectral, "GROUND_TRUTH": truth, "CLASS_FIELD": "class", "MODEL": model,
                    "REPORT": str(tmp / "a.html"), "CSV": model}, "CSV", "MODEL"),
    ]


def test_every_output_that_would_overwrite_an_input_is_refused(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    scene_dir = Path(tiny_scene["spectral"]).parent
    seen = set()
    for alg, params, out_id, in_id in _cases(tiny_scene, tmp_path):
        before = _digest(scene_dir)
        with pytest.raises(QgsProcessingException) as err:
            processing.run(f"bdgf:{alg}", params)

        message = str(err.value)
        assert f"({out_id})" in message and f"({in_id})" in message, (alg, message)
        assert "never overwrites its inputs" in message
        assert _digest(scene_dir) == before, f"{alg} changed an input"
        seen.add(alg)
    assert fake_runtime() == [], "the runtime was started although an output would overwrite an input"
    assert seen == {"classify", "pretrain", "train_baseline", "train", "assess"}


def test_distinct_outputs_still_run(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    model = str(tmp_path / "rf.bdgf")
    scene_dir = Path(tiny_scene["spectral"]).parent
    before = _digest(scene_dir)
    processing.run("bdgf:train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                                           "GROUND_TRUTH": tiny_scene["groundtruth"], "CLASS_FIELD": "class",
                                           "MODEL": model, "REPORT": str(tmp_path / "rf.html")})
    assert [c["command"] for c in fake_runtime()] == ["train-baseline"]
    assert _digest(scene_dir) == before, "reading the inputs wrote beside them (QGIS layer statistics?)"
