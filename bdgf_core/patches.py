"""Square patches around pixels, with reflect padding at the image borders."""
from __future__ import annotations

import numpy as np


def pad_reflect(image: np.ndarray, size: int) -> np.ndarray:
    """Pad a (C, H, W) image by size // 2 on each side with reflection (once per image)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"patch size must be odd and positive, got {size}")
    r = size // 2
    if r == 0:
        return image
    mode = "reflect" if min(image.shape[1:]) > r else "symmetric"
    return np.pad(image, ((0, 0), (r, r), (r, r)), mode=mode)


def extract_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Return (N, C, size, size) patches centred on (rows, cols) of the unpadded image.

    ``padded`` comes from :func:`pad_reflect`; the windows are a strided view of it, so only
    the N requested patches are copied.
    """
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    # windows: (C, H, W, size, size); pick pixels, then move channels after N.
    picked = windows[:, np.asarray(rows), np.asarray(cols)]
    return np.ascontiguousarray(picked.transpose(1, 0, 2, 3))
