"""train-baseline --features mean3 / mean9: the forest on window means, the same in training and classification."""
import json

import numpy as np
import pytest
from osgeo import gdal

from test_cli import result, run


def test_window_mean_forest_classifies_with_the_features_it_was_trained_on(tmp_path):
    """mean9 (the widest halo; window_means itself is checked for 3 and 9 in test_baseline.py)."""
    features = "mean9"
    from bdgf_core.baseline import forest_proba
    from bdgf_core.modelfile import load_model

    s = result(run("generate-scene", "--out-dir", tmp_path, "--size", "40", "--bands", "5", "--seed", "4")[1])
    run("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
        "--samples-per-class", "15", "--trees", "15", "--features", features, "--model", tmp_path / "rf.bdgf",
        "--report", tmp_path / "rf.html")
    run("classify", "--model", tmp_path / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"],
        "--out", tmp_path / "map.tif")
    tensors, meta = load_model(tmp_path / "rf.bdgf")
    size = int(features[4:])
    assert meta["window"] == size
    # the features computed independently: the whole scene normalised, reflected at its edges, window means by loops
    x = np.concatenate([gdal.Open(s["spectral"]).ReadAsArray(), gdal.Open(s["sar"]).ReadAsArray()]).astype(np.float64)
    mean = np.concatenate([tensors["spectral_mean"], tensors["sar_mean"]])[:, None, None]
    std = np.concatenate([tensors["spectral_std"], tensors["sar_std"]])[:, None, None]
    h = size // 2
    xp = np.pad((x - mean) / std, ((0, 0), (h, h), (h, h)), mode="reflect")
    f = np.stack([xp[:, r:r + 40, c:c + 40] for r in range(size) for c in range(size)]).mean(0)
    forest = {k[len("forest."):]: v for k, v in tensors.items() if k.startswith("forest.")}
    want = forest["classes"][forest_proba(forest, f.reshape(f.shape[0], -1).T).argmax(1)].reshape(40, 40)
    got = gdal.Open(str(tmp_path / "map.tif")).ReadAsArray()
    assert (got == want).mean() > 0.999  # float32 vs float64 sums may flip a tie at a threshold
    # the training report's held-out accuracy is that of the map at the test pixels
    ref = gdal.Open(s["reference"]).ReadAsArray().ravel()
    test = tensors["split.test"]
    rep = json.loads((tmp_path / "rf.json").read_text())
    assert rep["test_accuracy"]["oa"] == pytest.approx((got.ravel()[test] == ref[test]).mean() * 100, abs=0.2)
