"""Import paper scene (.mat), and label rasters / a fixed test layer wherever polygons are accepted."""
from __future__ import annotations

import pytest
from qgis.core import QgsProcessingException

import processing
from bdgf_qgis.provider import ALGORITHMS
from bdgf_qgis_testing import needs_runtime


def run(name, params):
    if name not in ALGORITHMS:
        pytest.skip(f"{name} is not in provider.ALGORITHMS")
    return processing.run(f"bdgf:{name}", params)


def argmap(args):
    return {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}


def label_raster(path, like, codes=(1, 2)):
    """A label raster on the grid of the GeoTIFF ``like``: class codes in two bands of rows, 0 elsewhere."""
    import numpy as np
    from osgeo import gdal

    ref = gdal.Open(like)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), ref.RasterXSize, ref.RasterYSize, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(ref.GetGeoTransform())
    ds.SetProjection(ref.GetProjection())
    a = np.zeros((ref.RasterYSize, ref.RasterXSize), np.uint8)
    a[1:4] = codes[0]
    a[6:9] = codes[1]
    ds.GetRasterBand(1).WriteArray(a)
    ds = None
    return str(path)


def mat_files(folder):
    names = {"HS_FILE": "data_HS_LR.mat", "SAR_FILE": "data_SAR_HR.mat", "TRAIN_FILE": "TrainImage.mat",
             "TEST_FILE": "TestImage.mat"}
    paths = {}
    for pid, name in names.items():
        p = folder / name
        p.write_bytes(b"not read by the plugin")
        paths[pid] = str(p)
    return paths


def test_import_mat_passes_the_files_and_returns_the_rasters(bdgf_provider, fake_runtime, tmp_path):
    files = mat_files(tmp_path)
    out = tmp_path / "augsburg"
    res = run("import_mat", {**files, "SCENE": 1, "OUTPUT_FOLDER": str(out)})
    [call] = fake_runtime()
    assert call["command"] == "import-mat"
    assert argmap(call["args"]) == {"--hs": files["HS_FILE"], "--sar": files["SAR_FILE"],
                                    "--train": files["TRAIN_FILE"], "--test": files["TEST_FILE"],
                                    "--out-dir": str(out), "--scene": "augsburg", "--progress": "json"}
    assert res["SPECTRAL"] == str(out / "spectral.tif") and res["SAR"] == str(out / "sar.tif")
    assert res["TRAIN_LABELS"] == str(out / "train_labels.tif")
    assert res["TEST_LABELS"] == str(out / "test_labels.tif")
    assert res["OUTPUT_FOLDER"] == str(out)


def test_training_takes_a_label_raster_and_a_fixed_test_layer(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    labels = label_raster(tmp_path / "train_labels.tif", tiny_scene["spectral"])
    run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "GROUND_TRUTH": labels,
                           "TEST_GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "rf.bdgf")})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--groundtruth"] == labels and a["--test-groundtruth"] == tiny_scene["groundtruth"]

    test_labels = label_raster(tmp_path / "test_labels.tif", tiny_scene["spectral"], codes=(2, 1))
    run("train", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "FEATURES": tiny_scene["spectral"],
                  "GROUND_TRUTH": tiny_scene["groundtruth"], "CLASS_FIELD": "class",
                  "TEST_GROUND_TRUTH": test_labels, "EPOCHS": 1, "MODEL": str(tmp_path / "b.bdgf")})
    call = fake_runtime()[-1]
    a = argmap(call["args"])
    assert call["command"] == "train" and a["--test-groundtruth"] == test_labels
    assert a["--groundtruth"] == tiny_scene["groundtruth"]

    run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                           "GROUND_TRUTH": tiny_scene["groundtruth"], "MODEL": str(tmp_path / "m.bdgf")})
    assert "--test-groundtruth" not in fake_runtime()[-1]["args"]


def test_test_layer_without_the_class_field_is_refused(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    from qgis.core import QgsVectorLayer

    other = QgsVectorLayer("Polygon?crs=EPSG:32632&field=label:integer", "other", "memory")
    with pytest.raises(QgsProcessingException, match="no field 'class'"):
        run("train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                               "GROUND_TRUTH": tiny_scene["groundtruth"], "TEST_GROUND_TRUTH": other,
                               "MODEL": str(tmp_path / "m.bdgf")})
    assert fake_runtime() == []


def test_assess_takes_a_label_raster(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    labels = label_raster(tmp_path / "test_labels.tif", tiny_scene["spectral"])
    res = run("assess", {"MAP": tiny_scene["spectral"], "GROUND_TRUTH": labels,
                         "REPORT": str(tmp_path / "acc.html")})
    a = argmap(fake_runtime()[-1]["args"])
    assert a["--groundtruth"] == labels and res["OA"] == 87.5


@needs_runtime
def test_import_mat_with_the_real_runtime(bdgf_provider, tmp_path):
    import numpy as np
    from osgeo import gdal
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    tr = np.zeros((12, 15))
    tr[1:4, 1:4], tr[6:9, 6:9] = 1, 2
    te = np.zeros((12, 15), np.float32)
    te[1:4, 10:14], te[9:11, 1:5] = 1, 2
    files = {"HS_FILE": ("data_HS_LR", rng.random((12, 15, 5))), "SAR_FILE": ("data_SAR_HR", rng.random((12, 15, 2))),
             "TRAIN_FILE": ("TrainImage", tr), "TEST_FILE": ("TestImage", te)}
    params = {}
    for pid, (name, array) in files.items():
        savemat(str(tmp_path / f"{name}.mat"), {name: array})
        params[pid] = str(tmp_path / f"{name}.mat")
    res = run("import_mat", {**params, "OUTPUT_FOLDER": str(tmp_path / "out")})
    assert (res["TRAIN_PIXELS"], res["TEST_PIXELS"]) == (18, 20)
    ds = gdal.Open(res["SPECTRAL"])
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (15, 12, 5)
    assert np.array_equal(gdal.Open(res["TEST_LABELS"]).ReadAsArray(), te.astype(np.uint8))
