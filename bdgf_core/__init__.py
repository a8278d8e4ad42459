"""BDGF runtime: data layer, diffusion pretraining, the multi-branch network and tiled inference.

Pure Python/PyTorch/GDAL; nothing here imports QGIS. QGIS runs this package's command line
(`python -m bdgf_core`) in a subprocess.
"""

__version__ = "0.1.0"
