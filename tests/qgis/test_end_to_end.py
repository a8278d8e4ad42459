"""generate_scene -> train_baseline -> classify -> assess with the real runtime, through
processing.run() and through scripts/qgis_process.sh. Skipped until `python -m bdgf_core` works."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bdgf_qgis_testing import needs_runtime, qgis_process

pytestmark = needs_runtime


def grid(path):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    assert ds is not None, path
    return (ds.RasterXSize, ds.RasterYSize), ds.GetGeoTransform(), ds.GetProjection()


def check_chain(scene, map_path, oa):
    from osgeo import gdal, osr
    from qgis.core import QgsVectorLayer

    (size, gt, wkt), (msize, mgt, mwkt) = grid(scene["SPECTRAL"]), grid(map_path)
    assert msize == size == (40, 40)
    assert np.allclose(mgt, gt)
    a, b = osr.SpatialReference(wkt=wkt), osr.SpatialReference(wkt=mwkt)
    assert a.IsSame(b)
    truth = QgsVectorLayer(str(scene["GROUND_TRUTH"]), "truth", "ogr")
    assert truth.isValid()
    codes = {int(f[scene["CLASS_FIELD"]]) for f in truth.getFeatures()}
    map_ds = gdal.Open(str(map_path))  # keep the dataset referenced while its band is used
    band = map_ds.GetRasterBand(1)
    values = set(np.unique(band.ReadAsArray()).tolist())
    nodata = band.GetNoDataValue()
    values.discard(nodata)
    assert values and values <= codes, (values, codes)
    assert isinstance(oa, float) and 0.0 <= oa <= 100.0


def test_chain_with_processing_run(bdgf_provider, tmp_path):
    import processing

    scene = processing.run("bdgf:generate_scene", {"SIZE": 40, "BANDS": 8, "SEED": 0,
                                                   "OUTPUT_FOLDER": str(tmp_path / "scene")})
    for key in ("SPECTRAL", "SAR", "GROUND_TRUTH"):
        assert Path(scene[key]).is_file(), key
    trained = processing.run("bdgf:train_baseline", {
        "SPECTRAL": scene["SPECTRAL"], "SAR": scene["SAR"], "GROUND_TRUTH": scene["GROUND_TRUTH"],
        "CLASS_FIELD": scene["CLASS_FIELD"], "SAMPLES_PER_CLASS": 20, "TREES": 20,
        "MODEL": str(tmp_path / "rf.bdgf"), "REPORT": str(tmp_path / "rf.html")})
    assert Path(trained["MODEL"]).is_file() and trained["TRAIN_PIXELS"] > 0
    classified = processing.run("bdgf:classify", {
        "MODEL": trained["MODEL"], "SPECTRAL": scene["SPECTRAL"], "SAR": scene["SAR"],
        "OUTPUT": str(tmp_path / "map.tif"), "CONFIDENCE": str(tmp_path / "conf.tif")})
    assert Path(classified["OUTPUT"]).is_file() and Path(classified["CONFIDENCE"]).is_file()
    assessed = processing.run("bdgf:assess", {
        "MAP": classified["OUTPUT"], "GROUND_TRUTH": scene["GROUND_TRUTH"], "CLASS_FIELD": scene["CLASS_FIELD"],
        "MODEL": trained["MODEL"], "REPORT": str(tmp_path / "acc.html")})
    assert Path(assessed["REPORT"]).is_file()
    check_chain(scene, classified["OUTPUT"], assessed["OA"])


def test_chain_with_qgis_process(tmp_path):
    profile = str(tmp_path / "profile")

    def run(alg, **params):
        args = ["--json", "run", f"bdgf:{alg}", "--"] + [f"{k}={v}" for k, v in params.items()]
        proc = qgis_process(*args, env_extra={"BDGF_QGIS_PROFILE": profile})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(proc.stdout[proc.stdout.find("{"):])["results"]

    scene = run("generate_scene", SIZE=40, BANDS=8, OUTPUT_FOLDER=tmp_path / "scene")
    trained = run("train_baseline", SPECTRAL=scene["SPECTRAL"], SAR=scene["SAR"],
                  GROUND_TRUTH=scene["GROUND_TRUTH"], CLASS_FIELD=scene["CLASS_FIELD"], SAMPLES_PER_CLASS=20,
                  TREES=20, MODEL=tmp_path / "rf.bdgf", REPORT=tmp_path / "rf.html")
    classified = run("classify", MODEL=trained["MODEL"], SPECTRAL=scene["SPECTRAL"], SAR=scene["SAR"],
                     OUTPUT=tmp_path / "map.tif")
    assessed = run("assess", MAP=classified["OUTPUT"], GROUND_TRUTH=scene["GROUND_TRUTH"],
                   CLASS_FIELD=scene["CLASS_FIELD"], REPORT=tmp_path / "acc.html")
    check_chain(scene, classified["OUTPUT"], float(assessed["OA"]))
