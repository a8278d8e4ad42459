"""Class colours given by code or name (QGIS passes the ground truth's categorized style) reach the model."""
from __future__ import annotations

import pytest

from bdgf_core import cli
from bdgf_core.modelfile import read_meta


def test_colours_by_code_and_name_reach_the_model(small_scene, tmp_path):
    model = tmp_path / "rf.bdgf"
    code = cli.main(["train-baseline", "--spectral", str(small_scene.spectral), "--sar", str(small_scene.sar),
                     "--groundtruth", str(small_scene.groundtruth), "--trees", "5", "--samples-per-class", "10",
                     "--class-colors", '{"1": "#123456", "forest": "#ABCDEF"}', "--model", str(model),
                     "--progress", "none"])
    assert code == 0
    colours = {c["code"]: c["color"] for c in read_meta(model)["classes"]}
    names = {c["code"]: c["name"] for c in read_meta(model)["classes"]}
    assert colours[1] == "#123456"
    forest = next(k for k, n in names.items() if n == "forest")
    assert colours[forest] == "#abcdef"
    assert all(colours[k] != "#123456" for k in colours if k != 1)


@pytest.mark.parametrize("bad", ["red", '{"1": "red"}', '["#123456"]'])
def test_bad_colours_are_refused_in_one_line(bad, small_scene, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train-baseline", "--spectral", str(small_scene.spectral), "--sar", str(small_scene.sar),
                  "--groundtruth", str(small_scene.groundtruth), "--class-colors", bad,
                  "--model", str(tmp_path / "m.bdgf")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class colours" in err[0]
