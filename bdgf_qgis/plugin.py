"""The QGIS plugin object: registers the Processing provider (with or without a GUI)."""
from __future__ import annotations

import traceback

from qgis.core import Qgis, QgsApplication, QgsMessageLog


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

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            try:
                QgsApplication.processingRegistry().removeProvider(self.provider)
            except Exception:
                QgsMessageLog.logMessage("Removing the BDGF provider failed:\n" + traceback.format_exc(),
                                         "BDGF", Qgis.Warning)
            self.provider = None
