"""Safety: a model file cannot run code, and nothing the plugin starts goes through a shell.

Model files are safetensors with our JSON metadata and nothing else (bdgf_core.modelfile): a
pickle or a ``torch.save`` archive crafted to run code on load must be refused, with a clear
message, and its code must never run. Each crafted file is first shown to be live (unpickling it
really writes its marker), so the test cannot pass on a harmless file.
"""
from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bdgf_core.errors import BdgfError
from bdgf_core.modelfile import load_model, read_meta, save_model

ROOT = Path(__file__).resolve().parents[1]


class _WritesMarker:
    """Unpickling this object writes ``path``: the classic __reduce__ payload."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran on load')",))


def _pickle_file(tmp_path: Path, marker: Path) -> Path:
    p = tmp_path / "evil.bdgf"
    p.write_bytes(pickle.dumps({"weights": _WritesMarker(marker)}))
    return p


def _torch_file(tmp_path: Path, marker: Path) -> Path:
    import torch

    p = tmp_path / "evil_torch.bdgf"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "extra": _WritesMarker(marker)}, p)
    return p


def test_crafted_files_are_live(tmp_path):
    """The payloads used below do run code when loaded the unsafe way."""
    import torch

    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    pickle.loads(_pickle_file(tmp_path, m1).read_bytes())  # nosec B301 - proving the payload is live
    assert m1.read_text() == "code ran on load"
    torch.load(_torch_file(tmp_path, m2), weights_only=False)  # nosec - proving the payload is live
    assert m2.exists()


@pytest.mark.parametrize("make", [_pickle_file, _torch_file], ids=["pickle", "torch.save"])
def test_load_model_refuses_code_carrying_files_without_running_them(tmp_path, make):
    marker = tmp_path / "marker"
    path = make(tmp_path, marker)
    for load in (load_model, read_meta, lambda p: load_model(p, "bdgf")):
        with pytest.raises(BdgfError) as err:
            load(path)
        assert f"{path.name} is not a BDGF model file" in str(err.value)
        assert "give a model written by this plugin" in str(err.value)
    from bdgf_core.models import load_predictor

    with pytest.raises(BdgfError, match="not a BDGF model file"):
        load_predictor(path)
    assert not marker.exists()


@pytest.mark.parametrize("make", [_pickle_file, _torch_file], ids=["pickle", "torch.save"])
def test_classify_refuses_code_carrying_model_files(tmp_path, make):
    """The same through the command line QGIS runs: exit 1, one line, no map, no marker."""
    marker = tmp_path / "marker"
    model = make(tmp_path, marker)
    p = subprocess.run([sys.executable, "-m", "bdgf_core", "classify", "--model", str(model),
                        "--spectral", str(tmp_path / "s.tif"), "--sar", str(tmp_path / "r.tif"),
                        "--out", str(tmp_path / "map.tif"), "--progress", "json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    errors = [e["message"] for e in events if e["event"] == "error"]
    assert p.returncode == 1, p.stdout + p.stderr
    assert len(errors) == 1 and "not a BDGF model file" in errors[0] and "\n" not in errors[0]
    assert not marker.exists() and not (tmp_path / "map.tif").exists()


def test_only_safetensors_with_our_metadata_is_accepted(tmp_path):
    from safetensors.numpy import save_file

    w = {"w": np.zeros(4, np.float32)}
    cases = {
        "no metadata": None,
        "other metadata": {"format": "pt"},
        "bdgf key not JSON": {"bdgf": "{not json"},
        "bdgf key a list": {"bdgf": json.dumps([1, 2])},
        "wrong format": {"bdgf": json.dumps({"format": "other", "version": 1, "kind": "bdgf"})},
        "unknown kind": {"bdgf": json.dumps({"format": "bdgf-model", "version": 1, "kind": "pickle"})},
    }
    for name, metadata in cases.items():
        p = tmp_path / f"{name}.bdgf"
        save_file(w, str(p), metadata=metadata)
        with pytest.raises(BdgfError, match="not a BDGF model file|corrupted metadata"):
            load_model(p)
    # what save_model writes is accepted, and is a plain safetensors file
    ok = save_model(tmp_path / "ok.bdgf", "baseline", w, {"classes": []})
    assert load_model(ok)[1]["kind"] == "baseline"
    header_len = int.from_bytes(ok.read_bytes()[:8], "little")
    header = json.loads(ok.read_bytes()[8:8 + header_len])
    assert set(header) == {"w", "__metadata__"} and set(header["__metadata__"]) == {"bdgf"}


def test_damaged_weights_are_refused_by_their_checksum(tmp_path):
    """Safetensors checks offsets, not contents: flipped bytes in the tensor data would load as
    garbage weights (a forest with node indices out of range crashed classification)."""
    p = save_model(tmp_path / "m.bdgf", "baseline", {"w": np.arange(64, dtype=np.float32)}, {})
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "d.bdgf").write_bytes(bytes(data))
    with pytest.raises(BdgfError, match=r"d\.bdgf is damaged .*checksum.*train or download the model again"):
        load_model(tmp_path / "d.bdgf")


def test_model_files_without_checksum_still_load(tmp_path):
    """Files written before the checksum existed have none: they load as before."""
    from safetensors.numpy import save_file

    meta = {"format": "bdgf-model", "version": 1, "kind": "baseline"}
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "old.bdgf"), metadata={"bdgf": json.dumps(meta)})
    tensors, got = load_model(tmp_path / "old.bdgf")
    assert got["kind"] == "baseline" and tensors["w"].tolist() == [1.0, 1.0]


# --- no code path that deserialises code or starts a shell -------------------------------------

UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("joblib", "load"), ("dill", "load"),
    ("os", "system"), ("os", "popen"), ("marshal", "loads"), ("yaml", "load"), ("shelve", "open"),
}


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func) -> tuple[str, ...]:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return tuple(reversed(parts))


def _sources():
    for pkg in ("bdgf_core", "bdgf_qgis"):
        yield from sorted((ROOT / pkg).rglob("*.py"))
    yield ROOT / "__init__.py"


def test_no_unsafe_deserialisation_nor_shell_in_the_code():
    found = []
    for path in _sources():
        for call in _calls(path):
            name = _dotted(call.func)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            bare = isinstance(call.func, ast.Name)
            if (not bare and name[-2:] in UNSAFE_CALLS) or (bare and name[0] in ("eval", "exec", "__import__")):
                found.append(f"{where} {'.'.join(name)}")
            for kw in call.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where} shell=")
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where} allow_pickle=")
    assert not found, "unsafe calls: " + ", ".join(found)


def test_the_runtime_bridge_starts_the_runtime_without_a_shell(monkeypatch):
    """bdgf_qgis.runtime builds an argv list and passes it to Popen with no shell."""
    pytest.importorskip("qgis.core")
    from bdgf_qgis import runtime

    seen = {}

    class NoStart(Exception):
        pass

    def fake_popen(args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise NoStart()

    monkeypatch.setattr(runtime.subprocess, "Popen", fake_popen)
    monkeypatch.setenv("BDGF_PYTHON", sys.executable)
    with pytest.raises(NoStart):
        runtime.run_command("classify", ["--out", "/tmp/a map; rm -rf x.tif"], None)
    assert isinstance(seen["args"], list) and not seen["kwargs"].get("shell", False)
    assert seen["args"][:3] == [sys.executable, "-m", "bdgf_core"]
    assert "/tmp/a map; rm -rf x.tif" in seen["args"]  # one argument, untouched


def test_shell_syntax_in_arguments_reaches_the_child_literally(tmp_path):
    """Arguments with shell syntax arrive as they are, and none of it is executed."""
    pytest.importorskip("qgis.core")
    from bdgf_qgis import runtime

    m = tmp_path / "m"
    tricky = [f"; touch {m}1", f"$(touch {m}2)", f"`touch {m}3`", f"| touch {m}4", "a b  c", "é ü 地图", "*"]
    echo = ("import json, sys; print(json.dumps({'event': 'result', 'outputs': {'argv': sys.argv[1:]}}))")
    result = runtime.run_process([sys.executable, "-c", echo, *tricky], None, cwd=str(tmp_path))
    assert result["argv"] == tricky
    assert not list(tmp_path.glob("m*"))


def test_plugin_sources_import_no_pickle():
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not {n.split(".")[0] for n in names} & {"pickle", "dill", "cloudpickle", "joblib", "shelve",
                                                              "marshal"}, f"{path}: {names}"
