"""The runtime refuses, before any work, an output that would overwrite one of its inputs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bdgf_core import cli
from bdgf_core.paths import clashes


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture()
def files(tmp_path):
    for name in ("spectral.tif", "sar.tif", "truth.gpkg", "model.bdgf", "map.tif", "feat.tif"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    return {p.stem: str(p) for p in tmp_path.iterdir()}


def cases(f):
    spectral_tiff = f["spectral"][:-4] + ".tiff"  # would write spectral.qml, the input's style
    return [
        (["classify", "--model", f["model"], "--spectral", f["spectral"], "--sar", f["sar"], "--out", f["spectral"]],
         "--out", "--spectral"),
        (["classify", "--model", f["model"], "--spectral", f["spectral"], "--sar", f["sar"], "--out", spectral_tiff],
         "--out", "--spectral"),
        (["classify", "--model", f["model"], "--spectral", f["spectral"], "--sar", f["sar"],
          "--out", f["map"] + "x.tif", "--entropy", f["model"]], "--entropy", "--model"),
        (["pretrain", "--spectral", f["spectral"], "--sar", f["sar"], "--model", f["model"] + "2",
          "--features", f["sar"]], "--features", "--sar"),
        (["train", "--spectral", f["spectral"], "--sar", f["sar"], "--features", f["feat"],
          "--groundtruth", f["truth"], "--model", f["model"] + "2", "--report", f["feat"]], "--report", "--features"),
        (["train-baseline", "--spectral", f["spectral"], "--sar", f["sar"], "--groundtruth", f["truth"],
          "--model", f["truth"]], "--model", "--groundtruth"),
        (["assess", "--map", f["map"], "--groundtruth", f["truth"], "--report", f["map"] + ".html",
          "--json", f["map"] + ".aux.xml"], "--json", "--map"),
    ]


def test_every_command_refuses_an_output_over_an_input(files, tmp_path, capsys):
    before = _digest(tmp_path)
    commands = set()
    for argv, out_flag, in_flag in cases(files):
        assert cli.main(argv + ["--progress", "none"]) == cli.EXIT_ERROR, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert out_flag in err[0] and in_flag in err[0] and "never overwrites its inputs" in err[0], err[0]
        commands.add(argv[0])
    assert _digest(tmp_path) == before
    assert commands == {"classify", "pretrain", "train", "train-baseline", "assess"}


def test_distinct_files_and_links_are_told_apart(tmp_path):
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    link = tmp_path / "link.tif"
    link.symlink_to(a)
    assert clashes([("--spectral", str(a))], [("--out", str(tmp_path / "b.tif"))]) == []
    assert clashes([("--spectral", str(a))], [("--out", str(link))])  # the same file under another name
    assert clashes([("--spectral", str(a))], [("--out", str(tmp_path / "sub" / ".." / "a.tif"))])
    shp = tmp_path / "truth.shp"
    assert clashes([("--groundtruth", str(shp))], [("--report", str(tmp_path / "truth.dbf"))])
