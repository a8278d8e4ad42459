"""BDGF for QGIS: the plugin entry point. QGIS calls classFactory(iface); iface is None in qgis_process.

Nothing is imported at module level, so that this file stays harmless when the repository
root is imported as a package by other tools.
"""


def classFactory(iface):  # noqa: N802 - QGIS's name
    from .bdgf_qgis.plugin import BdgfPlugin

    return BdgfPlugin(iface)
