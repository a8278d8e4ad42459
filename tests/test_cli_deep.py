"""Pretrain DDPM -> Train BDGF -> Classify -> Assess through the runtime's command line."""
import json

import numpy as np
import pytest
from osgeo import gdal

from bdgf_core.testsample import allocate
from test_cli import error, result, run


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    d = tmp_path_factory.mktemp("deep")
    _, ev, _ = run("generate-scene", "--out-dir", d, "--size", "40", "--bands", "8", "--seed", "2")
    s = result(ev)
    _, ev, _ = run("pretrain", "--spectral", s["spectral"], "--sar", s["sar"], "--profile", "fast", "--steps", "4",
                   "--tile-size", "32", "--timesteps", "5,50", "--feature-channels", "8",
                   "--model", d / "ddpm.bdgf", "--features", d / "feat.tif")
    p = result(ev)
    _, ev, _ = run("train", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
                   "--features", p["features"], "--samples-per-class", "20", "--epochs", "2", "--batch-size", "32",
                   "--patch-size", "5", "--device", "cpu", "--model", d / "bdgf.bdgf", "--report", d / "train.html")
    t = result(ev)
    t["events"] = ev
    _, ev, _ = run("classify", "--model", t["model"], "--spectral", s["spectral"], "--sar", s["sar"],
                   "--features", p["features"], "--out", d / "map.tif", "--confidence", d / "conf.tif")
    t["classified"] = result(ev)
    return d, s, p, t


def test_chain_classify_and_assess_agree_with_training(deep):
    d, s, p, trained = deep
    rep = json.loads((d / "train.json").read_text())
    assert len(rep["history"]["loss"]) == 2
    out = trained["classified"]
    ds, ref = gdal.Open(out["map"]), gdal.Open(s["spectral"])
    assert (ds.RasterXSize, ds.RasterYSize) == (40, 40) and ds.GetGeoTransform() == ref.GetGeoTransform()
    conf = gdal.Open(out["confidence"]).ReadAsArray()
    assert conf.min() > 0 and conf.max() <= 1 + 1e-6
    _, ev, _ = run("assess", "--map", out["map"], "--groundtruth", s["groundtruth"], "--model", trained["model"],
                   "--report", d / "acc.html", "--json", d / "acc.json")
    acc = result(ev)
    # the map's accuracy on the held-out pixels is the one training measured on the same pixels
    assert acc["oa"] == pytest.approx(trained["test_oa"], abs=1e-3)


def test_bdgf_model_needs_its_features(deep, tmp_path):
    d, s, p, trained = deep
    code, ev, _ = run("classify", "--model", trained["model"], "--spectral", s["spectral"], "--sar", s["sar"],
                      "--out", tmp_path / "m.tif", check=False)
    assert code == 1 and "needs diffusion features" in error(ev)
    # a feature raster with other channel counts (here: the spectral raster itself) is refused
    code, ev, _ = run("classify", "--model", trained["model"], "--spectral", s["spectral"], "--sar", s["sar"],
                      "--features", s["sar"], "--out", tmp_path / "m.tif", check=False)
    assert code == 1 and "diffusion feature channels" in error(ev)
    assert not (tmp_path / "m.tif").exists()


def test_training_without_features_needs_guidance_off(deep, tmp_path):
    d, s, _, _ = deep
    base = ["train", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
            "--samples-per-class", "10", "--epochs", "1", "--patch-size", "3", "--model", tmp_path / "m.bdgf"]
    code, ev, _ = run(*base, check=False)
    assert code == 1 and "--features" in error(ev)
    _, ev, _ = run(*base, "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba")
    assert (tmp_path / "m.bdgf").exists()
    code, ev, _ = run(*base, "--no-cnn", "--no-transformer", "--no-mamba", check=False)
    assert code == 1 and "at least one branch" in error(ev)
    code, ev, _ = run(*base, "--patch-size", "4", check=False)
    assert code == 1 and "odd" in error(ev)


def test_model_file_round_trip_predicts_like_the_trained_net(deep):
    from bdgf_core.models import load_predictor
    from bdgf_core.patches import pad_reflect
    from bdgf_core.raster import RasterSource

    d, s, p, trained = deep
    pred, meta = load_predictor(trained["model"])
    assert meta["kind"] == "bdgf" and meta["inputs"]["feature_bands"] == 8
    # whole images with the patch halo, padded the way training and the streamed classification pad
    spec, sar, feat = (pad_reflect(RasterSource(x).read(), pred.patch) for x in (s["spectral"], s["sar"], p["features"]))
    probs = pred.predict_block(spec, sar, feat)
    assert probs.shape == (len(meta["classes"]), 40, 40)
    assert np.allclose(probs.sum(0), 1, atol=1e-4)
    # the block-streamed map is the argmax of the whole-image prediction
    m = gdal.Open(trained["classified"]["map"]).ReadAsArray()
    codes = np.array([c["code"] for c in meta["classes"]])
    assert (codes[probs.argmax(0)] == m).mean() > 0.999


def test_training_report_has_curves_and_held_out_accuracy(deep):
    d, *_ = deep
    html = (d / "train.html").read_text()
    assert "Training curves" in html and "<polyline" in html and "held-out test pixels" in html
    rep = json.loads((d / "train.json").read_text())
    assert rep["meta"]["network"] and len(rep["test_accuracy"]["classes"]) == 7


def test_training_shows_the_test_phase_and_what_evaluation_cost(deep):
    """The held-out test after the epochs has its own progress (it was a silent stretch at 90 %) and
    the log says how the time split between training, validation and test (issue 16)."""
    d, s, p, trained = deep
    testing = [e for e in trained["events"] if e.get("event") == "progress" and "held-out pixels" in e.get("message", "")]
    assert testing and all(90 <= e["percent"] <= 98 for e in testing)
    assert testing[-1]["percent"] == pytest.approx(98)
    log = (d / "bdgf.bdgf.log").read_text()
    assert "time: training" in log and "% of training and evaluation)" in log
    rep = json.loads((d / "train.json").read_text())
    assert rep["history"]["test_seconds"] > 0


def test_test_cap_estimates_from_a_stratified_sample(deep, tmp_path):
    """--test-cap: the held-out test predicts a stratified sample and the report gives the estimates with
    their intervals; a cap below the number of classes stops the run before its first epoch (issue 16)."""
    d, s, p, _ = deep
    base = ["train", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
            "--features", p["features"], "--samples-per-class", "10", "--epochs", "1", "--patch-size", "3",
            "--device", "cpu", "--model", tmp_path / "m.bdgf", "--report", tmp_path / "m.html"]
    _, ev, _ = run(*base, "--test-cap", "21")
    rep = json.loads((tmp_path / "m.json").read_text())
    acc, split = rep["test_accuracy"], rep["split"]
    assert split["test"] > 21 and acc["sample"]["n"] == 21 and acc["n"] == split["test"]
    assert acc["sample"]["population"] == split["test"]
    assert {c["code"]: c["test_pixels"] for c in acc["classes"]} == {int(k): v["test"]
                                                                       for k, v in split["classes"].items()}
    # an equal part per class (3 of 21 for 7 classes); a class with fewer test pixels gives all of them
    sampled = [c["sampled"] for c in acc["classes"]]
    assert sampled == allocate(np.array([c["test_pixels"] for c in acc["classes"]]), 21).tolist()
    assert max(sampled) - min(x for x, c in zip(sampled, acc["classes"]) if c["test_pixels"] > x) <= 1
    assert result(ev)["test_oa"] == acc["oa"]
    log = (tmp_path / "m.bdgf.log").read_text()
    assert f"estimated from a stratified sample of 21 of the {split['test']} held-out pixels" in log
    assert "stratified sample" in (tmp_path / "m.html").read_text()
    code, ev, _ = run(*base, "--test-cap", "3", check=False)
    assert code == 1 and "test cap (3) is smaller than the number of classes" in error(ev)
    assert not any(e.get("event") == "progress" and "epoch" in e.get("message", "") for e in ev)
    code, _, err = run(*base, "--test-cap", "-5", check=False)
    assert code == 2 and "--test-cap" in err
