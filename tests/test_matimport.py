"""import-mat: the paper's scenes from their MATLAB files, and the fixed train/test split they carry."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from scipy.io import loadmat, savemat

from bdgf_core.errors import BdgfError
from bdgf_core.groundtruth import load_ground_truth
from bdgf_core.matimport import import_scene, read_mat
from bdgf_core.raster import RasterSource
from conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    if check and p.returncode != 0:
        raise AssertionError(p.stdout + p.stderr)
    return p.returncode, events


def result(events):
    return next(e["outputs"] for e in events if e["event"] == "result")


def cube(h, w, bands, dtype=np.float32):
    """A cube whose every value says where it is: band + row / 100 + col / 10000."""
    r = np.arange(h, dtype=dtype)[:, None, None] / 100
    c = np.arange(w, dtype=dtype)[None, :, None] / 10000
    return (np.arange(bands, dtype=dtype)[None, None, :] + r + c).astype(dtype)


def save(path, name, array):
    savemat(str(path), {name: array}, do_compression=False)
    return path


def small_scene(d, h=20, w=30, hs_bands=6, sar_bands=4):
    d.mkdir(parents=True, exist_ok=True)
    tr = np.zeros((h, w))
    te = np.zeros((h, w), np.float32)
    for k, r in enumerate((1, 8, 14)):
        tr[r:r + 4, 1:5] = 1
        tr[r:r + 4, 12:16] = 2
        te[r:r + 4, 6:10] = 1
        te[r:r + 4, 18:24] = 2
    return {"hs": save(d / "data_HS_LR.mat", "data_HS_LR", cube(h, w, hs_bands, np.float64)),
            "sar": save(d / "data_SAR_HR.mat", "data_SAR_HR", cube(h, w, sar_bands) * 0.1),
            "train": save(d / "TrainImage.mat", "TrainImage", tr),
            "test": save(d / "TestImage.mat", "TestImage", te)}


def test_augsburg_labels_and_paper_shapes_round_trip(tmp_path):
    """The real Augsburg label files with cubes of the paper's shapes (332 x 485 x 180 and x 4)."""
    train, test = shared_data("augsburg", "TrainImage.mat"), shared_data("augsburg", "TestImage.mat")
    hs = save(tmp_path / "data_HS_LR.mat", "data_HS_LR", cube(332, 485, 180))
    sar = save(tmp_path / "data_SAR_HR.mat", "data_SAR_HR", cube(332, 485, 4) - 20)
    _, ev = cli("import-mat", "--hs", hs, "--sar", sar, "--train", train, "--test", test,
                "--out-dir", tmp_path / "out")
    out = result(ev)
    assert (out["scene"], out["height"], out["width"], out["classes"]) == ("augsburg", 332, 485, 7)
    assert (out["train_pixels"], out["test_pixels"]) == (761, 77533)
    assert out["crs"].startswith("none")
    spec = gdal.Open(out["spectral"])
    assert (spec.RasterYSize, spec.RasterXSize, spec.RasterCount) == (332, 485, 180)
    assert spec.GetGeoTransform() == (0.0, 1.0, 0.0, 332.0, 0.0, -1.0) and spec.GetProjection() == ""
    ref = cube(332, 485, 180)
    for b in (0, 97, 179):
        assert np.array_equal(spec.GetRasterBand(b + 1).ReadAsArray(), ref[:, :, b])
    sar_ds = gdal.Open(out["sar"])
    assert sar_ds.RasterCount == 4 and sar_ds.GetGeoTransform() == spec.GetGeoTransform()
    assert np.array_equal(sar_ds.GetRasterBand(4).ReadAsArray(), ref[:, :, 3] - 20)
    raw_train = loadmat(str(train))["TrainImage"]
    raw_test = loadmat(str(test))["TestImage"]
    assert np.array_equal(gdal.Open(out["train"]).ReadAsArray(), raw_train)
    assert np.array_equal(gdal.Open(out["test"]).ReadAsArray(), raw_test.astype(np.uint8))
    grid = RasterSource(out["spectral"]).grid
    gt_train, gt_test = load_ground_truth(out["train"], grid), load_ground_truth(out["test"], grid)
    assert sum(gt_train.counts().values()) == 761 and sum(gt_test.counts().values()) == 77533
    assert sorted(gt_train.counts()) == sorted(gt_test.counts()) == list(range(1, 8))
    assert gt_train.counts()[6] == 7
    assert [c.name for c in gt_train.classes][:2] == ["Forest", "Residential Area"]
    assert gt_test.classes[-1].name == "Water"


def test_import_names_variables_and_scenes(tmp_path):
    files = small_scene(tmp_path / "s")
    res = import_scene(files["hs"], files["sar"], files["train"], files["test"], tmp_path / "out", "berlin")
    assert res["scene"] == "berlin" and res["classes"] == 2
    grid = RasterSource(res["spectral"]).grid
    assert [c.name for c in load_ground_truth(res["train"], grid).classes] == ["Forest", "Residential Area"]
    res = import_scene(files["hs"], files["sar"], files["train"], files["test"], tmp_path / "auto")
    assert res["scene"] == "none"  # 20 x 30 is no known scene
    assert [c.name for c in load_ground_truth(res["test"], grid).classes] == ["class 1", "class 2"]
    # any file name works when the file holds one array
    one = save(tmp_path / "cube.mat", "whatever", cube(20, 30, 3))
    assert read_mat(one, "hyperspectral").shape == (20, 30, 3)


@pytest.mark.parametrize("case,match", [
    ("sar_shape", "SAR image .* is 10 x 30 but the hyperspectral image is 20 x 30"),
    ("label_shape", "training labels .* are 20 x 29"),
    ("fraction", "negative or fractional"),
    ("two_arrays", "several arrays"),
    ("not_mat", "not a MATLAB .mat file"),
    ("missing", "does not exist"),
    ("flat_hs", "expected numbers of shape height x width x bands"),
])
def test_import_errors_name_the_problem(tmp_path, case, match):
    f = small_scene(tmp_path / "s")
    if case == "sar_shape":
        f["sar"] = save(tmp_path / "sar.mat", "data_SAR_HR", cube(10, 30, 2))
    elif case == "label_shape":
        f["train"] = save(tmp_path / "tr.mat", "TrainImage", np.zeros((20, 29)))
    elif case == "fraction":
        f["test"] = save(tmp_path / "te.mat", "TestImage", np.full((20, 30), 0.5))
    elif case == "two_arrays":
        savemat(str(tmp_path / "hs.mat"), {"a": cube(20, 30, 2), "b": cube(20, 30, 2)})
        f["hs"] = tmp_path / "hs.mat"
    elif case == "not_mat":
        (tmp_path / "x.mat").write_text("hello, not MATLAB")
        f["hs"] = tmp_path / "x.mat"
    elif case == "missing":
        f["test"] = tmp_path / "nope.mat"
    elif case == "flat_hs":
        f["hs"] = save(tmp_path / "hs.mat", "data_HS_LR", np.zeros((2, 3, 4, 5)))
    with pytest.raises(BdgfError, match=match):
        import_scene(f["hs"], f["sar"], f["train"], f["test"], tmp_path / "out")


def _v73_header() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def test_v73_file_without_h5py_says_how_to_fix(tmp_path, monkeypatch):
    p = tmp_path / "data_HS_LR.mat"
    p.write_bytes(_v73_header() + b"\x00" * 384)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(BdgfError, match=r"v7\.3 \(HDF5\).*needs the h5py package.*pip install h5py"):
        read_mat(p, "hyperspectral")


def test_v73_file_is_read_with_h5py(tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py is optional (MATLAB v7.3 files only) and not installed")
    p = tmp_path / "data_HS_LR.mat"
    a = cube(5, 7, 3)
    with h5py.File(str(p), "w", userblock_size=512) as f:
        f.create_dataset("data_HS_LR", data=a.T)  # MATLAB writes column-major: axes reversed in HDF5
        f.create_dataset("other", data=np.zeros(3))
    with open(p, "r+b") as f:
        f.write(_v73_header())
    assert np.array_equal(read_mat(p, "hyperspectral"), a)


def test_imported_scene_trains_on_its_fixed_split_and_assesses_on_the_test_labels(tmp_path):
    f = small_scene(tmp_path / "s")
    _, ev = cli("import-mat", "--hs", f["hs"], "--sar", f["sar"], "--train", f["train"], "--test", f["test"],
                "--out-dir", tmp_path / "out")
    s = result(ev)
    model, rep = tmp_path / "rf.bdgf", tmp_path / "train.html"
    _, ev = cli("train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["train"],
                "--test-groundtruth", s["test"], "--samples-per-class", "1000", "--trees", "20",
                "--model", model, "--report", rep)
    trained = result(ev)
    assert trained["train_pixels"] == s["train_pixels"] == 96
    assert trained["test_pixels"] == s["test_pixels"] == 120
    split = json.loads(rep.with_suffix(".json").read_text())["split"]
    assert split["strategy"] == "fixed" and split["test_groundtruth"] == str(Path(s["test"]).resolve())
    assert split["classes"]["1"]["test_polygons"] == 3 and split["classes"]["2"]["train_polygons"] == 3
    html = rep.read_text()
    assert "Strategy <b>fixed</b>" in html and "random pixel split" not in html
    _, ev = cli("classify", "--model", model, "--spectral", s["spectral"], "--sar", s["sar"],
                "--out", tmp_path / "map.tif")
    cmap = result(ev)["map"]
    _, ev = cli("assess", "--map", cmap, "--groundtruth", s["test"], "--model", model,
                "--report", tmp_path / "acc.html", "--json", tmp_path / "acc.json")
    acc = json.loads((tmp_path / "acc.json").read_text())
    assert acc["n"] == 120 and "held-out" in acc["tested_on"] and "fixed" in acc["tested_on"]
    assert result(ev)["oa"] == pytest.approx(acc["oa"], abs=1e-3)
    # a label raster without a model: every labelled pixel, class names from the map's categories
    _, ev = cli("assess", "--map", cmap, "--groundtruth", s["test"], "--report", tmp_path / "acc2.html",
                "--json", tmp_path / "acc2.json")
    acc2 = json.loads((tmp_path / "acc2.json").read_text())
    assert acc2["n"] == 120 and acc2["oa"] == pytest.approx(acc["oa"], abs=1e-3)
