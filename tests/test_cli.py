"""The runtime's command line, as QGIS and shell users run it."""
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


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    if check and p.returncode != 0:
        raise AssertionError(p.stdout + p.stderr)
    return p.returncode, events, p.stderr


def result(events):
    return next(e["outputs"] for e in events if e["event"] == "result")


def scene_with_forest(d, size: int, bands: int, seed: int, samples: int, trees: int) -> dict:
    """generate-scene in ``d`` and a random forest trained on it (``rf.bdgf``): the scene's outputs and "rf"."""
    _, ev, _ = run("generate-scene", "--out-dir", d, "--size", size, "--bands", bands, "--seed", seed)
    s = result(ev)
    run("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
        "--samples-per-class", samples, "--trees", trees, "--model", d / "rf.bdgf")
    return {**s, "rf": d / "rf.bdgf"}


def error(events):
    return next(e["message"] for e in events if e["event"] == "error")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain dir é")  # spaces and non-ASCII must work
    _, ev, _ = run("generate-scene", "--out-dir", d, "--size", "48", "--bands", "10", "--seed", "1")
    s = result(ev)
    _, ev, _ = run("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth",
                   s["groundtruth"], "--samples-per-class", "30", "--trees", "50", "--model", d / "rf.bdgf",
                   "--report", d / "train.html")
    return d, s, result(ev), ev


def test_help_works_without_qgis():
    p = subprocess.run([sys.executable, "-m", "bdgf_core", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and "train-baseline" in p.stdout and "classify" in p.stdout


def test_baseline_chain_end_to_end(chain):
    d, s, trained, ev = chain
    assert any(e["event"] == "progress" for e in ev)
    assert trained["train_pixels"] > 0 and trained["test_pixels"] > 0
    rep = json.loads((d / "train.json").read_text())
    assert rep["split"]["strategy"] == "polygons"
    _, ev, _ = run("classify", "--model", d / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"],
                   "--out", d / "map.tif", "--confidence", d / "conf.tif")
    out = result(ev)
    ds, ref = gdal.Open(out["map"]), gdal.Open(s["spectral"])
    assert (ds.RasterXSize, ds.RasterYSize) == (48, 48)
    assert ds.GetGeoTransform() == ref.GetGeoTransform() and ds.GetProjection() == ref.GetProjection()
    m = ds.ReadAsArray()
    assert set(np.unique(m)) <= set(range(1, 8)) and len(np.unique(m)) >= 4
    _, ev, _ = run("assess", "--map", out["map"], "--groundtruth", s["groundtruth"], "--model", d / "rf.bdgf",
                   "--report", d / "acc.html", "--json", d / "acc.json", "--csv", d / "acc.csv")
    acc = result(ev)
    assert 50 <= acc["oa"] <= 100 and -100 <= acc["kappa"] <= 100
    j = json.loads((d / "acc.json").read_text())
    assert j["oa"] == pytest.approx(acc["oa"], abs=1e-3) and "polygons" in j["tested_on"]
    # tested on the model's held-out pixels: as many as training reported
    assert j["n"] == trained["test_pixels"]
    html = (d / "acc.html").read_text()
    assert "Confusion matrix" in html and "<svg" in html and "water" in html


def test_model_refuses_other_band_counts(chain, tmp_path):
    d, s, _, _ = chain
    _, ev, _ = run("generate-scene", "--out-dir", tmp_path, "--size", "32", "--bands", "7")
    other = result(ev)
    code, ev, _ = run("classify", "--model", d / "rf.bdgf", "--spectral", other["spectral"], "--sar", other["sar"],
                      "--out", tmp_path / "m.tif", check=False)
    assert code == 1 and "10 bands, but this one has 7" in error(ev)
    assert not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("args, message", [
    (["--samples-per-class", "0"], "positive"),
    (["--samples-per-class", "-5"], "positive"),
    (["--class-field", "nope"], "'nope' is not in"),
])
def test_bad_training_parameters(chain, tmp_path, args, message):
    d, s, _, _ = chain
    p = subprocess.run([sys.executable, "-m", "bdgf_core", "train-baseline", "--spectral", s["spectral"],
                        "--sar", s["sar"], "--groundtruth", s["groundtruth"], "--model", str(tmp_path / "m.bdgf"),
                        "--progress", "json", *args], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode in (1, 2)
    assert message in (p.stdout + p.stderr)
    assert len((p.stderr.strip() or p.stdout.strip()).splitlines()[-1]) < 300
    assert not (tmp_path / "m.bdgf").exists()


def test_swapped_inputs_and_unwritable_output(chain, tmp_path):
    d, s, _, _ = chain
    code, ev, _ = run("train-baseline", "--spectral", s["sar"], "--sar", s["spectral"], "--groundtruth",
                      s["groundtruth"], "--model", tmp_path / "m.bdgf", check=False)
    assert code == 1 and "has 2 bands but the SAR raster" in error(ev) and "swap" in error(ev)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root); the check cannot be exercised")
        code, ev, _ = run("classify", "--model", d / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"],
                          "--out", ro / "m.tif", check=False)
        assert code == 1 and "not writable" in error(ev)
    finally:
        ro.chmod(0o700)


def test_unwritable_output_folder_is_refused_before_work(chain, tmp_path):
    d, s, _, _ = chain
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, ev, _ = run("classify", "--model", d / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"],
                      "--out", blocker / "m.tif", check=False)
    assert code == 1 and "is a file, not a folder" in error(ev)


def test_cuda_without_gpu_is_a_clear_error(chain, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    d, s, _, _ = chain
    code, ev, _ = run("classify", "--model", d / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"],
                      "--out", tmp_path / "m.tif", "--device", "cuda", check=False)
    assert code == 1 and "no CUDA GPU" in error(ev)


def test_sigterm_cancels_and_leaves_no_partial_file(chain, tmp_path):
    d, s, _, _ = chain
    _, ev, _ = run("generate-scene", "--out-dir", tmp_path, "--size", "600", "--bands", "10")
    big = result(ev)
    p = subprocess.Popen([sys.executable, "-m", "bdgf_core", "classify", "--model", str(d / "rf.bdgf"),
                          "--spectral", big["spectral"], "--sar", big["sar"], "--out", str(tmp_path / "m.tif"),
                          "--memory-mb", "32", "--progress", "json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:  # wait until classification has started writing blocks
        if '"progress"' in line and json.loads(line)["percent"] > 5:
            break
    p.send_signal(signal.SIGTERM)
    t0 = time.time()
    rest = p.stdout.read()
    code = p.wait(10)
    assert code == 130 and time.time() - t0 < 5
    assert "cancelled" in rest
    assert not [f for f in tmp_path.iterdir() if f.name.startswith((".m", "m."))]
