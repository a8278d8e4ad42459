"""The QGIS plugin object: registers the Processing provider (with or without a GUI), and lists
the plugin's graphical models (resources/models/*.model3) under the Toolbox's Models."""
from __future__ import annotations

import os
import traceback
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings

#: Shipped graphical models; QGIS's 'Models' provider lists every .model3 of its models folders.
MODELS_DIR = Path(__file__).resolve().parent.parent / "resources" / "models"
MODELS_SETTING = "MODELS_FOLDER"  # processing.modeler.ModelerUtils.MODELS_FOLDER


def _same_folder(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _set_models_folders(change) -> None:
    """Apply ``change(folders) -> folders`` to Processing's models folders setting, then reload the
    'Models' provider. Appends keep the user's own folder first (new models are saved there)."""
    from processing.core.ProcessingConfig import ProcessingConfig
    from processing.modeler.ModelerUtils import ModelerUtils

    folders = [f for f in ModelerUtils.modelsFolders() if f]
    if ModelerUtils.MODELS_FOLDER not in ProcessingConfig.settings:
        # The Models provider is not loaded yet: it reads the setting when it loads.
        stored = QgsSettings().value(f"Processing/Configuration/{MODELS_SETTING}", "")
        folders = [f for f in str(stored or "").split(";") if f] or folders
    new = change(folders)
    if new != folders:
        value = ";".join(new)
        if ModelerUtils.MODELS_FOLDER in ProcessingConfig.settings:
            ProcessingConfig.setSettingValue(ModelerUtils.MODELS_FOLDER, value)
        else:
            QgsSettings().setValue(f"Processing/Configuration/{MODELS_SETTING}", value)
    provider = QgsApplication.processingRegistry().providerById("model")
    if provider is not None:
        provider.refreshAlgorithms()


def add_models_folder() -> None:
    """List the plugin's models under Models (idempotent)."""
    ours = str(MODELS_DIR)
    _set_models_folders(lambda fs: fs if any(_same_folder(f, ours) for f in fs) else fs + [ours])


def remove_models_folder() -> None:
    """Take the plugin's models folder out of the setting again."""
    ours = str(MODELS_DIR)
    _set_models_folders(lambda fs: [f for f in fs if not _same_folder(f, ours)])


class BdgfPlugin:
    """Adds the BDGF provider; ``iface`` is None under qgis_process."""

    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider = None

    def initProcessing(self) -> None:
        if self.provider is not None:
            return
        try:
            from .provider import BdgfProvider

            provider = BdgfProvider()
            if not QgsApplication.processingRegistry().addProvider(provider):
                raise RuntimeError("the Processing registry refused the provider (id 'bdgf' already taken?)")
            self.provider = provider  # keep a reference, or the algorithms are "not found"
        except Exception:
            QgsMessageLog.logMessage("The BDGF Processing provider could not be loaded:\n"
                                     + traceback.format_exc(), "BDGF", Qgis.Critical)
            return
        try:
            add_models_folder()
        except Exception:  # Processing's Python side missing: the models are not listed, nothing breaks
            QgsMessageLog.logMessage("The BDGF graphical models could not be listed under Models:\n"
                                     + traceback.format_exc(), "BDGF", Qgis.Warning)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            try:
                remove_models_folder()
            except Exception:
                QgsMessageLog.logMessage("Removing the BDGF models folder failed:\n" + traceback.format_exc(),
                                         "BDGF", Qgis.Warning)
            try:
                QgsApplication.processingRegistry().removeProvider(self.provider)
            except Exception:
                QgsMessageLog.logMessage("Removing the BDGF provider failed:\n" + traceback.format_exc(),
                                         "BDGF", Qgis.Warning)
            self.provider = None
