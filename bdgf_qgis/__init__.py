"""QGIS adapter of BDGF: the plugin, the Processing provider, its algorithms and the runtime bridge.

Nothing here imports torch or ``bdgf_core``: the algorithms run the runtime in a subprocess
(see :mod:`.runtime`). Importing this package imports nothing from QGIS either.
"""
