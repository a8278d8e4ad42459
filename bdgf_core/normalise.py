"""Per-band normalisation statistics, computed once on the scene and stored with the model."""
from __future__ import annotations

import numpy as np

from .errors import BdgfError

MAX_SAMPLE = 200_000  # pixels: enough for stable statistics, bounded memory on large scenes


def band_stats(read, height: int, width: int, what: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per band from up to MAX_SAMPLE valid pixels.

    ``read(row0, row1)`` returns a (C, rows, W) float32 strip with NaN for nodata. Rows are read
    in strips spread over the scene so that a huge raster is never read whole.
    """
    rng = np.random.default_rng(seed)
    n_strips = min(height, 64)
    starts = np.unique(np.linspace(0, height - 1, n_strips).astype(int))
    per_strip = max(1, MAX_SAMPLE // len(starts))
    samples = []
    for r in starts:
        strip = read(int(r), int(r) + 1)                      # (C, 1, W)
        px = strip.reshape(strip.shape[0], -1).T               # (W, C)
        px = px[np.isfinite(px).all(1)]
        if px.shape[0] > per_strip:
            px = px[rng.choice(px.shape[0], per_strip, replace=False)]
        samples.append(px)
    x = np.concatenate(samples) if samples else np.empty((0, 0))
    if x.shape[0] == 0:
        raise BdgfError(f"the {what} has no valid pixel (all nodata or NaN); give a raster with data")
    mean = x.mean(0).astype(np.float32)
    std = x.std(0).astype(np.float32)
    std[std < 1e-12] = 1.0  # a constant band stays constant rather than exploding
    return mean, std


def apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalise a (C, ...) block in place-safe way; NaN stays NaN."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
