"""The BDGF Processing provider: registers the algorithms the runtime supports."""
from __future__ import annotations

import importlib
import traceback
from pathlib import Path

from qgis.core import Qgis, QgsMessageLog, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .runtime import SETTING_PYTHON

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"
LOG_TAG = "BDGF"

#: Algorithms the provider registers, by name(); edit to match what the runtime supports.
ALGORITHMS = ("generate_scene", "import_mat", "pretrain", "train", "train_baseline", "classify", "assess")

#: name() -> (module of this package, class)
_CLASSES = {
    "generate_scene": ("alg_generate_scene", "GenerateSceneAlgorithm"),
    "import_mat": ("alg_import_mat", "ImportMatAlgorithm"),
    "train_baseline": ("alg_train_baseline", "TrainBaselineAlgorithm"),
    "classify": ("alg_classify", "ClassifyAlgorithm"),
    "assess": ("alg_assess", "AssessAlgorithm"),
    "pretrain": ("alg_pretrain", "PretrainAlgorithm"),
    "train": ("alg_train", "TrainAlgorithm"),
}


def log(message: str, level=Qgis.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)


class BdgfProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "bdgf"

    def name(self) -> str:
        return "BDGF"

    def longName(self) -> str:
        return "BDGF: diffusion-guided multi-branch classification of hyperspectral and SAR images"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:
        return str(ICON_PATH)

    def supportedOutputRasterLayerExtensions(self):
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"

    def load(self) -> bool:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(
                self.name(), SETTING_PYTHON,
                "Python interpreter of the BDGF runtime (blank: the plugin's own .venv)", "",
                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        except Exception:  # Processing's Python side is not loaded (plain scripts): no setting
            log("Processing settings are not available; the BDGF_PYTHON setting is not shown:\n"
                + traceback.format_exc(), Qgis.Warning)
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        from . import styles

        styles.forget_pending()  # post-processors of outputs never loaded: released before QGIS goes
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(SETTING_PYTHON)
        except Exception:
            pass

    def loadAlgorithms(self) -> None:
        for name in ALGORITHMS:
            try:
                module_name, class_name = _CLASSES[name]
                module = importlib.import_module(f"{__package__}.{module_name}")
                self.addAlgorithm(getattr(module, class_name)())
            except Exception:
                log(f"The BDGF algorithm '{name}' could not be loaded:\n{traceback.format_exc()}", Qgis.Critical)
