"""Nothing is lost: runs at the same time do not disturb each other, and a cancelled run leaves
no partial file and no process behind (issue 6).

Already in test_cli.py: SIGTERM during classify exits 130 and leaves no partial file
(test_sigterm_cancels_and_leaves_no_partial_file). Added here: two classifications at once,
cancel during train-baseline, and the check that no process of a cancelled run survives.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

ROOT = Path(__file__).resolve().parents[1]


def start(*args, **env) -> subprocess.Popen:
    """The runtime in its own process group (as the QGIS bridge starts it), JSON progress."""
    return subprocess.Popen([sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1", **env))


def finish(p: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return next(e["outputs"] for e in events if e["event"] == "result")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cancel_when(p: subprocess.Popen, percent: float) -> tuple[int, str, float]:
    """SIGTERM once progress passes ``percent``; return (exit code, rest of stdout, seconds to exit)."""
    for line in p.stdout:
        if line.startswith('{"event": "progress"') and json.loads(line)["percent"] >= percent:
            break
    else:
        pytest.fail("the run ended before it could be cancelled: " + p.stderr.read()[-2000:])
    time.sleep(0.3)  # inside the stage, not at its first line
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    rest = p.stdout.read()
    code = p.wait(30)
    p.stderr.close()
    return code, rest, time.monotonic() - t0


def assert_nothing_left(folder: Path, before: set, pgid: int) -> None:
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(pgid), "a process of the cancelled run is still alive"
    left = {p.name for p in folder.iterdir()} - before
    assert not left, f"left behind: {left}"


def make_scene(folder: Path, size: int, bands: int, trees: int) -> dict:
    s = finish(start("generate-scene", "--out-dir", folder, "--size", size, "--bands", bands, "--seed", "1"))
    s["rf"] = finish(start("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth",
                           s["groundtruth"], "--samples-per-class", "100", "--trees", trees,
                           "--model", folder / "rf.bdgf"))["model"]
    return s


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("nothing lost"), 160, 20, 30)


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory):
    """Large enough that classification lasts seconds (a cancel must land in the middle)."""
    return make_scene(tmp_path_factory.mktemp("nothing lost big"), 400, 10, 100)


def test_two_classifications_at_once_equal_a_single_run(scene, tmp_path):
    def classify(name):
        # a small memory budget: many blocks, so the two runs interleave their writes
        return start("classify", "--model", scene["rf"], "--spectral", scene["spectral"], "--sar", scene["sar"],
                     "--out", tmp_path / f"{name}.tif", "--confidence", tmp_path / f"{name} conf.tif",
                     "--memory-mb", "32")

    single = finish(classify("single"))
    a, b = classify("a"), classify("b")  # the same folder, at the same time
    both = [finish(a), finish(b)]
    ref_map, ref_conf = (gdal.Open(single[k]).ReadAsArray() for k in ("map", "confidence"))
    assert len(np.unique(ref_map)) >= 4
    for out in both:
        np.testing.assert_array_equal(gdal.Open(out["map"]).ReadAsArray(), ref_map)
        np.testing.assert_array_equal(gdal.Open(out["confidence"]).ReadAsArray(), ref_conf)
        assert Path(out["style"]).read_text() == Path(single["style"]).read_text()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_cancel_during_train_baseline_leaves_no_file_and_no_process(scene, tmp_path):
    before = {p.name for p in tmp_path.iterdir()}
    # two joblib threads (as on a 2-core machine): fitting 1000 trees lasts seconds
    p = start("train-baseline", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth",
              scene["groundtruth"], "--samples-per-class", "3000", "--trees", "1000",
              "--model", tmp_path / "rf.bdgf", "--report", tmp_path / "rf.html", LOKY_MAX_CPU_COUNT="2")
    code, rest, seconds = cancel_when(p, 25.0)  # 25 %: the forest is being fitted
    assert code == 130, rest
    assert "cancelled" in rest
    assert_nothing_left(tmp_path, before, p.pid)
    if seconds > 3:
        # Not a hard failure: from QGIS the bridge kills the process group a second after SIGTERM.
        pytest.xfail(f"cancel took {seconds:.1f} s: the forest is fitted in one scikit-learn call, which the "
                     "SIGTERM handler cannot interrupt; bdgf_core/baseline.py should grow it in chunks of trees "
                     "(warm_start) and check for cancel between chunks")


def test_cancel_during_classify_leaves_no_file_and_no_process(big_scene, tmp_path):
    scene = big_scene
    before = {p.name for p in tmp_path.iterdir()}
    p = start("classify", "--model", scene["rf"], "--spectral", scene["spectral"], "--sar", scene["sar"],
              "--out", tmp_path / "map.tif", "--confidence", tmp_path / "conf.tif", "--entropy", tmp_path / "ent.tif",
              "--memory-mb", "32")
    code, rest, seconds = cancel_when(p, 10.0)
    assert code == 130, rest
    assert "cancelled" in rest and seconds < 10
    assert_nothing_left(tmp_path, before, p.pid)


def test_interrupted_training_resumes_to_the_model_of_an_uninterrupted_run(scene, tmp_path):
    """Long runs checkpoint: SIGTERM during `train` leaves only the epoch checkpoint beside the model;
    the same command run again resumes from it and writes the weights an uninterrupted run writes."""
    from bdgf_core.modelfile import load_model

    def train(model: Path) -> subprocess.Popen:
        return start("train", "--spectral", scene["spectral"], "--sar", scene["sar"], "--groundtruth",
                     scene["groundtruth"], "--samples-per-class", "12", "--patch-size", "3", "--epochs", "24",
                     "--validation-share", "0.2", "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba",
                     "--device", "cpu", "--model", model)

    ref = finish(train(tmp_path / "ref.bdgf"))["model"]
    run = tmp_path / "run"
    run.mkdir()
    p = train(run / "m.bdgf")
    code, rest, _ = cancel_when(p, 30.0)  # a third of the epochs done
    assert code == 130, rest
    assert "The finished epochs are kept in .m.bdgf.checkpoint: the same command resumes from there" in rest
    assert [f.name for f in run.iterdir()] == [".m.bdgf.checkpoint"]
    p = train(run / "m.bdgf")  # the same command again
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert "resuming from the checkpoint .m.bdgf.checkpoint" in out
    # the checkpoint is gone once the model is written; the run log is beside it
    assert sorted(f.name for f in run.iterdir()) == ["m.bdgf", "m.bdgf.log"]
    assert "resuming from the checkpoint" in (run / "m.bdgf.log").read_text()
    (a, _), (b, _) = load_model(ref), load_model(run / "m.bdgf")
    weights = [k for k in a if k.startswith("net.")]
    assert weights and all(np.array_equal(a[k], b[k]) for k in weights)


def test_cancel_during_feature_extraction_keeps_the_pretraining_for_the_rerun(big_scene, tmp_path):
    """SIGTERM while `pretrain` computes the features: neither the model nor the features are written
    (a model without its features was left before), the checkpoint stays, and the same command
    resumes at the last step and writes the features of an uninterrupted run."""
    scene = big_scene

    def pretrain(folder: Path) -> subprocess.Popen:
        return start("pretrain", "--spectral", scene["spectral"], "--sar", scene["sar"], "--profile", "fast",
                     "--steps", "3", "--device", "cpu", "--model", folder / "d.bdgf", "--features", folder / "f.tif")

    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    finish(pretrain(ref))
    p = pretrain(run)
    code, rest, _ = cancel_when(p, 80.0)  # the features are 75-100 %
    assert code == 130, rest
    assert "the same command resumes from there and computes the features without pretraining again" in rest
    assert ".d.bdgf.checkpoint" in rest
    assert [f.name for f in run.iterdir()] == [".d.bdgf.checkpoint"]
    p = pretrain(run)  # the same command again
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert "resuming from the checkpoint .d.bdgf.checkpoint" in out
    assert sorted(f.name for f in run.iterdir()) == ["d.bdgf", "d.bdgf.log", "f.tif"]
    a, b = (gdal.Open(str(d / "f.tif")).ReadAsArray() for d in (ref, run))
    np.testing.assert_array_equal(a, b)


def test_a_cancel_while_the_features_are_flushed_leaves_neither_output(tmp_path, monkeypatch, capsys):
    """The features' last write (GDAL's flush at close) comes before the model file: a cancel there
    leaves neither output, only the checkpoint, and says how to resume."""
    from bdgf_core import cli
    from bdgf_core.errors import Cancelled
    from bdgf_core.raster import RasterWriter
    from bdgf_core.scene import generate_scene

    s = generate_scene(tmp_path / "scene", size=32, bands=6, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    close = RasterWriter.close
    hit = []

    def cancelled_close(self):
        if self.ds is not None and not hit:
            hit.append(1)
            raise Cancelled()
        close(self)

    monkeypatch.setattr(RasterWriter, "close", cancelled_close)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = cli.main(["pretrain", "--spectral", str(s.spectral), "--sar", str(s.sar), "--profile", "fast",
                         "--steps", "2", "--device", "cpu", "--model", str(out / "d.bdgf"),
                         "--features", str(out / "f.tif"), "--progress", "json"])
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    assert hit and code == 130
    message = [json.loads(x)["message"] for x in capsys.readouterr().out.splitlines()
               if x.startswith('{"event": "error"')]
    assert message and "The pretrained network is kept in .d.bdgf.checkpoint" in message[0], message
    assert [f.name for f in out.iterdir()] == [".d.bdgf.checkpoint"]
