"""Every BDGF dialog opens in QGIS Desktop's widgets with any mix of layers loaded.

Run by tests/qgis/test_dialogs.py in a child pytest with the GUI on (pytest-qgis's ``qgis_iface``,
offscreen): a dialog that crashes QGIS kills that child, not the test session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "qgis"))

from qgis.core import QgsApplication, QgsProcessingContext, QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402

MIXES = {
    "none": (),
    "rasters only": ("spectral", "sar"),
    "rasters first, then vectors": ("spectral", "sar", "groundtruth"),
    "vectors only": ("groundtruth",),
    "vectors first, then rasters": ("groundtruth", "spectral", "sar"),
}


@pytest.fixture(scope="module")
def provider(qgis_processing, qgis_iface):
    from qgis.gui import QgsBrowserGuiModel

    from bdgf_qgis.provider import BdgfProvider

    # pytest-qgis's iface answers browserModel() with a MagicMock, which Processing's panel rejects
    browser = QgsBrowserGuiModel()
    qgis_iface.browserModel = lambda: browser

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("bdgf")
    if provider is None:
        provider = BdgfProvider()
        assert registry.addProvider(provider)
    yield provider


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from bdgf_qgis_testing import write_small_scene  # tests/qgis/conftest.py

    return write_small_scene(tmp_path_factory.mktemp("dialog_scene"))


def _load(scene, names):
    project = QgsProject.instance()
    project.removeAllMapLayers()
    for name in names:
        path = scene[name]
        layer = (QgsVectorLayer(path, name, "ogr") if path.endswith(".gpkg") else QgsRasterLayer(path, name))
        assert layer.isValid(), path
        project.addMapLayer(layer)


@pytest.mark.parametrize("mix", list(MIXES))
def test_every_dialog_opens(provider, scene, qgis_iface, mix):
    import processing
    from processing.gui.AlgorithmDialogBase import AlgorithmDialogBase
    from qgis.PyQt.QtWidgets import QApplication

    _load(scene, MIXES[mix])
    opened = []
    for alg in provider.algorithms():
        dialog = processing.createAlgorithmDialog(alg.id(), {})
        assert dialog is not None, alg.id()
        try:
            dialog.show()
            QApplication.processEvents()
            try:  # the values the dialog would run with; a required input left empty is the dialog's own message
                dialog.mainWidget().createProcessingParameters()
            except AlgorithmDialogBase.InvalidParameterValue as missing:
                assert "spectral" not in MIXES[mix] or not missing.parameter.name().startswith(("SPECTRAL", "SAR")), (
                    f"{alg.id()}: {missing.parameter.name()} left empty although rasters are loaded")
            opened.append(alg.id())
        finally:
            dialog.close()
            dialog.deleteLater()
            QApplication.processEvents()
    print(f"{mix}: opened {len(opened)} dialogs: {', '.join(opened)}")
    assert len(opened) == len(provider.algorithms()) >= 7


def test_class_field_offers_text_and_number_fields(provider, scene, qgis_iface):
    """The class field lists every field (text names too), once the polygons are chosen."""
    import processing
    from qgis.PyQt.QtWidgets import QApplication

    _load(scene, MIXES["rasters first, then vectors"])
    polygons = QgsProject.instance().mapLayersByName("groundtruth")[0]
    for alg_id in ("bdgf:train", "bdgf:train_baseline", "bdgf:assess"):
        dialog = processing.createAlgorithmDialog(alg_id, {})
        try:
            dialog.show()
            wrappers = dialog.mainWidget().wrappers
            wrappers["GROUND_TRUTH"].setParameterValue(polygons.id(), QgsProcessingContext())
            QApplication.processEvents()
            for pid in ("CLASS_FIELD", "CLASS_NAME_FIELD"):
                combo = wrappers[pid].wrappedWidget()
                offered = {combo.itemText(i) for i in range(combo.count())}
                assert {"class", "name"} <= offered, (alg_id, pid, offered)
        finally:
            dialog.close()
            dialog.deleteLater()
            QApplication.processEvents()


def test_train_dialog_test_cap_defaults_and_takes_zero(provider, scene, qgis_iface):
    """Train BDGF's test cap (issue 16) shows the runtime's default, and 0 (every held-out pixel) reaches the
    parameters as 0, not as 'not set'."""
    import processing
    from qgis.PyQt.QtWidgets import QApplication

    from bdgf_qgis.alg_train import TEST_CAP

    _load(scene, MIXES["rasters first, then vectors"])
    dialog = processing.createAlgorithmDialog("bdgf:train", {})
    try:
        dialog.show()
        QApplication.processEvents()
        wrapper = dialog.mainWidget().wrappers["TEST_CAP"]
        assert wrapper.parameterValue() == TEST_CAP == 2000
        wrapper.setParameterValue(0, QgsProcessingContext())
        QApplication.processEvents()
        assert wrapper.parameterValue() == 0
        assert dialog.mainWidget().createProcessingParameters()["TEST_CAP"] == 0
    finally:
        dialog.close()
        dialog.deleteLater()
        QApplication.processEvents()
