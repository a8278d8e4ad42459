"""Data as analysts bring it, through processing.run() against the fake runtime: several SAR or
spectral files, text class fields with a name field, a selection of polygons, label rasters with
their own unlabelled value, and training without diffusion features when guidance is off."""
from __future__ import annotations

import sqlite3

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeatureSourceDefinition, QgsProject, QgsVectorLayer

import processing


def argv(call):
    """The runtime argv as {option: [values]} (options may take several values)."""
    out, key = {}, None
    for a in call["args"]:
        if a.startswith("--"):
            key = a
            out[key] = []
        elif key:
            out[key].append(a)
    return out


def test_several_sar_and_spectral_files_are_stacked(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    s, r = tiny_scene["spectral"], tiny_scene["sar"]
    processing.run("bdgf:train_baseline", {"SPECTRAL": s, "SPECTRAL_EXTRA": [r], "SAR": r, "SAR_EXTRA": [s, r],
                                           "SAR_RESAMPLING": 2, "GROUND_TRUTH": tiny_scene["groundtruth"],
                                           "MODEL": str(tmp_path / "m.bdgf")})
    a = argv(fake_runtime()[-1])
    assert a["--spectral"] == [s, r] and a["--sar"] == [r, s, r]
    assert a["--sar-resampling"] == ["average"]
    processing.run("bdgf:classify", {"MODEL": str(tmp_path / "m.bdgf"), "SPECTRAL": s, "SPECTRAL_EXTRA": [r],
                                     "SAR": r, "SAR_EXTRA": [s, r], "OUTPUT": str(tmp_path / "map.tif")})
    a = argv(fake_runtime()[-1])
    assert a["--spectral"] == [s, r] and a["--sar"] == [r, s, r] and "--sar-resampling" not in a


def test_text_class_field_with_names_and_a_selection(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    layer = QgsVectorLayer(tiny_scene["groundtruth"], "gt", "ogr")
    QgsProject.instance().addMapLayer(layer)
    layer.selectByExpression('"class" = 2')
    selection = QgsProcessingFeatureSourceDefinition(layer.id(), selectedFeaturesOnly=True)
    processing.run("bdgf:train_baseline", {
        "SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "GROUND_TRUTH": selection,
        "CLASS_FIELD": "class", "CLASS_NAME_FIELD": "name", "MODEL": str(tmp_path / "m.bdgf")})
    QgsProject.instance().removeMapLayer(layer.id())
    a = argv(fake_runtime()[-1])
    assert a["--class-field"] == ["class"] and a["--class-name-field"] == ["name"]
    exported = a["--groundtruth"][0]
    assert exported != tiny_scene["groundtruth"], "a selection must reach the runtime as an export"
    with sqlite3.connect(exported) as db:
        table = db.execute("select table_name from gpkg_contents").fetchone()[0]
        assert sorted(r[0] for r in db.execute(f'select "class" from "{table}"')) == [2]


def test_label_raster_and_its_unlabelled_value(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    from test_import_mat import label_raster

    labels = label_raster(tmp_path / "labels.tif", tiny_scene["spectral"])
    processing.run("bdgf:train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                                           "LABEL_RASTER": labels, "UNLABELLED_VALUE": 255,
                                           "MODEL": str(tmp_path / "m.bdgf")})
    a = argv(fake_runtime()[-1])
    assert a["--groundtruth"] == [labels] and a["--unlabelled-value"] == ["255"]
    with pytest.raises(QgsProcessingException, match="not both"):
        processing.run("bdgf:train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                                               "LABEL_RASTER": labels, "GROUND_TRUTH": tiny_scene["groundtruth"],
                                               "MODEL": str(tmp_path / "m.bdgf")})
    with pytest.raises(QgsProcessingException, match="No ground truth"):
        processing.run("bdgf:train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                                               "MODEL": str(tmp_path / "m.bdgf")})


def test_train_without_features_only_when_guidance_is_off(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    base = {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "GROUND_TRUTH": tiny_scene["groundtruth"],
            "CLASS_FIELD": "class", "EPOCHS": 1, "MODEL": str(tmp_path / "m.bdgf")}
    with pytest.raises(QgsProcessingException, match="FEATURES"):
        processing.run("bdgf:train", base)
    processing.run("bdgf:train", {**base, "GUIDE_CNN": False, "GUIDE_TRANSFORMER": False, "GUIDE_MAMBA": False})
    a = argv(fake_runtime()[-1])
    assert "--features" not in a
    assert {"--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba"} <= set(a)


def test_colours_come_from_the_layers_categorized_style(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    import json

    from qgis.core import QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory

    layer = QgsVectorLayer(tiny_scene["groundtruth"], "styled", "ogr")
    categories = [QgsRendererCategory(code, QgsFillSymbol.createSimple({"color": colour}), str(code))
                  for code, colour in ((1, "#112233"), (2, "#445566"))]
    layer.setRenderer(QgsCategorizedSymbolRenderer("class", categories))
    QgsProject.instance().addMapLayer(layer)
    try:
        processing.run("bdgf:train_baseline", {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
                                               "GROUND_TRUTH": layer.id(), "CLASS_FIELD": "class",
                                               "MODEL": str(tmp_path / "m.bdgf")})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    a = argv(fake_runtime()[-1])
    assert json.loads(a["--class-colors"][0]) == {"1": "#112233", "2": "#445566"}
