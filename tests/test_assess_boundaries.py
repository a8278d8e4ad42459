"""`assess` against a full reference map: accuracy apart on boundary and interior pixels."""
import json

import numpy as np
import pytest
from osgeo import gdal

from test_cli import result, run


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    s = result(run("generate-scene", "--out-dir", d, "--size", "40", "--bands", "6", "--seed", "2")[1])
    run("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
        "--samples-per-class", "20", "--trees", "20", "--model", d / "rf.bdgf")
    run("classify", "--model", d / "rf.bdgf", "--spectral", s["spectral"], "--sar", s["sar"], "--out", d / "map.tif")
    return d, s


def _brute_force_boundary(ref: np.ndarray, distance: float = 2.0) -> np.ndarray:
    h, w = ref.shape
    out = np.zeros(ref.shape, bool)
    for r in range(h):
        for c in range(w):
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    rr, cc = r + dr, c + dc
                    if dr * dr + dc * dc <= distance ** 2 and 0 <= rr < h and 0 <= cc < w and ref[rr, cc] != ref[r, c]:
                        out[r, c] = True
    return out


def test_assess_against_the_reference_map_splits_boundary_and_interior_pixels(mapped):
    d, s = mapped
    out = result(run("assess", "--map", d / "map.tif", "--groundtruth", s["reference"], "--model", d / "rf.bdgf",
                     "--report", d / "acc.html", "--json", d / "acc.json")[1])
    j = json.loads((d / "acc.json").read_text())
    b = j["boundaries"]
    ref = gdal.Open(s["reference"]).ReadAsArray()
    m = gdal.Open(str(d / "map.tif")).ReadAsArray()
    from bdgf_core.modelfile import load_model

    tensors, _ = load_model(d / "rf.bdgf")
    scored = np.ones(ref.size, bool)
    scored[np.concatenate([tensors["split.train"], tensors["split.val"]])] = False  # training pixels left out
    scored = scored.reshape(ref.shape)
    edge = _brute_force_boundary(ref)
    assert b["boundary"]["n"] == (edge & scored).sum() and b["interior"]["n"] == (~edge & scored).sum()
    assert j["n"] == scored.sum() == out["boundary_pixels"] + out["interior_pixels"]
    right = m == ref
    assert out["oa_boundary"] == pytest.approx(right[edge & scored].mean() * 100, abs=1e-3)
    assert out["oa_interior"] == pytest.approx(right[~edge & scored].mean() * 100, abs=1e-3)
    assert "Boundary and interior pixels" in (d / "acc.html").read_text()


def test_assess_against_polygons_gives_the_breakdown_only_when_asked(mapped):
    d, s = mapped
    out = result(run("assess", "--map", d / "map.tif", "--groundtruth", s["groundtruth"], "--model", d / "rf.bdgf",
                     "--report", d / "p.html")[1])
    assert "oa_boundary" not in out
    out = result(run("assess", "--map", d / "map.tif", "--groundtruth", s["groundtruth"], "--model", d / "rf.bdgf",
                     "--report", d / "p.html", "--boundaries", "on")[1])
    assert out["boundary_pixels"] + out["interior_pixels"] > 0
    code, ev, _ = run("assess", "--map", d / "map.tif", "--groundtruth", s["reference"], "--report", d / "q.html",
                      "--boundary-distance", "0.5", check=False)
    assert code == 1 and "boundary distance must be at least 1 pixel" in next(
        e["message"] for e in ev if e["event"] == "error")
