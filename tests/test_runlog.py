"""Each command writes a log beside its main output (issue 6): the command line, the messages and
the outputs of the run; nothing when the run fails."""
from __future__ import annotations

import json
from pathlib import Path

from bdgf_core import cli


def test_a_run_leaves_its_log_beside_the_output(tmp_path, capsys):
    out = tmp_path / "scène 1"
    assert cli.main(["generate-scene", "--out-dir", str(out), "--size", "24", "--bands", "4", "--progress", "json"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    result = events[-1]["outputs"]
    log = out / "generate-scene.log"
    assert result["log"] == str(log)
    text = log.read_text(encoding="utf-8")
    assert "command: python -m bdgf_core generate-scene --out-dir " in text and "'" in text  # quoted path
    assert "torch " in text and "GDAL " in text
    assert json.loads(text.split("outputs: ", 1)[1])["spectral"] == result["spectral"]

    model = tmp_path / "rf.bdgf"
    assert cli.main(["train-baseline", "--spectral", result["spectral"], "--sar", result["sar"], "--groundtruth",
                     result["groundtruth"], "--samples-per-class", "5", "--trees", "3", "--model", str(model)]) == 0
    text = (tmp_path / "rf.bdgf.log").read_text(encoding="utf-8")
    assert "ground truth:" in text and "split:" in text  # the run's own messages


def test_a_failed_run_leaves_no_log(tmp_path, capsys):
    model = tmp_path / "rf.bdgf"
    code = cli.main(["train-baseline", "--spectral", str(tmp_path / "missing.tif"), "--sar", str(tmp_path / "x.tif"),
                     "--groundtruth", str(tmp_path / "g.gpkg"), "--model", str(model)])
    assert code != 0
    assert list(tmp_path.iterdir()) == []
