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


def test_outputs_load_styled_into_the_project(bdgf_provider, tmp_path):
    """What a user sees once Processing loads the outputs: the scene with its ground truth as class
    outlines, the map with exactly the model's classes (no stray 0 or 255 entries of the embedded
    palette), the confidence and entropy with a colour ramp."""
    import processing
    from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputLayerDefinition,
                           QgsProcessingUtils, QgsProject, QgsRasterLayer)

    def loaded(context):
        """Load what the run leaves to load, as Processing does, applying each post-processor."""
        layers = {}
        for path, details in context.layersToLoadOnCompletion().items():
            layer = QgsProcessingUtils.mapLayerFromString(path, context, True)
            assert layer is not None and layer.isValid(), path
            if details.postProcessor() is not None:
                details.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
            layers[details.outputName] = layer
        return layers

    def new_context():
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        return context

    context = new_context()
    scene = processing.run("bdgf:generate_scene", {"SIZE": 40, "BANDS": 8, "SEED": 0,
                                                   "OUTPUT_FOLDER": str(tmp_path / "scene")}, context=context)
    layers = loaded(context)
    assert set(layers) == {"SPECTRAL", "SAR", "GROUND_TRUTH"}
    truth = layers["GROUND_TRUTH"]
    assert truth.renderer().type() == "categorizedSymbol" and truth.renderer().classAttribute() == "class"
    categories = truth.renderer().categories()
    assert [c.label() for c in categories][:2] == ["water", "forest"]
    fill = categories[0].symbol().symbolLayer(0)
    assert fill.brushStyle() == 0, "ground truth must be drawn as outlines (no fill) over the image"  # Qt.NoBrush
    codes = {int(f["class"]): f["name"] for f in truth.getFeatures()}

    trained = processing.run("bdgf:train_baseline", {
        "SPECTRAL": scene["SPECTRAL"], "SAR": scene["SAR"], "GROUND_TRUTH": scene["GROUND_TRUTH"],
        "CLASS_FIELD": "class", "SAMPLES_PER_CLASS": 20, "TREES": 10, "MODEL": str(tmp_path / "rf.bdgf")})
    context = new_context()
    def to_project(name):  # as the dialog passes a destination with "Open output file after running"
        return QgsProcessingOutputLayerDefinition(str(tmp_path / name), QgsProject.instance())

    classified = processing.run("bdgf:classify", {
        "MODEL": trained["MODEL"], "SPECTRAL": scene["SPECTRAL"], "SAR": scene["SAR"],
        "OUTPUT": to_project("map.tif"), "CONFIDENCE": to_project("conf.tif"),
        "ENTROPY": to_project("ent.tif")}, context=context)
    layers = loaded(context)
    plain_context = new_context()
    plain_load = QgsProcessingUtils.mapLayerFromString(classified["OUTPUT"], plain_context, True)
    assert len(plain_load.renderer().classes()) == 256, "Processing ignores the .qml: the post-processor is needed"
    legend = [(int(c.value), c.label) for c in layers["OUTPUT"].renderer().classes()]
    assert legend == sorted(codes.items()), legend
    for key in ("CONFIDENCE", "ENTROPY"):
        assert isinstance(layers[key], QgsRasterLayer)
        assert layers[key].renderer().type() == "singlebandpseudocolor", key
    assert layers["CONFIDENCE"].renderer().classificationMax() == 1.0
