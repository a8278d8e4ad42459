"""Whole-map scoring against a full reference map: all pixels, boundary pixels and interior pixels.

Held-out polygons stop short of class borders, so their accuracy says nothing about the pixels
next to an edge, where spatial models blur. A reference map that labels every pixel (the
synthetic scene's ``reference.tif``, or a user's own map) shows it: a *boundary pixel* is a
labelled pixel whose Euclidean distance (between pixel centres) to a labelled pixel of another
class is at most ``distance`` pixels (2 by default: the 12 neighbours with dy^2 + dx^2 <= 4);
every other labelled pixel is an *interior pixel*. Unlabelled pixels (code 0) and the image's
edge are no class edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import BdgfError
from .metrics import Accuracy, assess

BOUNDARY_DISTANCE = 2.0   # pixels
FULL_REFERENCE_SHARE = 0.95  # a reference labelling at least this share of the map's pixels is a full map


def disk(distance: float) -> np.ndarray:
    """The footprint of the pixels within ``distance`` (Euclidean, pixel centres) of the centre."""
    r = int(np.floor(distance))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy ** 2 + xx ** 2 <= distance ** 2 + 1e-9


def boundary_mask(reference: np.ndarray, distance: float = BOUNDARY_DISTANCE) -> np.ndarray:
    """(H, W) bool: labelled pixels within ``distance`` pixels of a labelled pixel of another class."""
    if distance < 1:
        raise BdgfError(f"the boundary distance must be at least 1 pixel, got {distance:g}")
    ref = np.asarray(reference)
    labelled = ref > 0
    fp = disk(distance)
    # Another class in the footprint shows as a larger maximum or a smaller minimum; unlabelled
    # pixels are pushed out of both (0 for the maximum, the top code for the minimum).
    high = ndimage.maximum_filter(np.where(labelled, ref, 0), footprint=fp, mode="nearest")
    low = ndimage.minimum_filter(np.where(labelled, ref, ref.max(initial=0) + 1), footprint=fp, mode="nearest")
    return labelled & ((high != ref) | (low != ref))


def is_full_reference(reference: np.ndarray, share: float = FULL_REFERENCE_SHARE) -> bool:
    """Whether a reference labels nearly every pixel (a reference map, not training polygons)."""
    ref = np.asarray(reference)
    return ref.size > 0 and float((ref > 0).mean()) >= share


@dataclass
class MapScore:
    """Accuracy over all scored pixels and over their boundary and interior parts."""

    all: Accuracy
    boundary: Accuracy
    interior: Accuracy
    distance: float
    boundary_share: float       # share of the scored pixels that are boundary pixels
    error_boundary_share: float  # share of the errors that lie on boundary pixels

    def to_json(self, names: dict[int, str] | None = None) -> dict:
        nan = lambda v: None if not np.isfinite(v) else round(float(v), 4)  # noqa: E731
        return {"boundary_distance_px": self.distance, "boundary_metric": "euclidean",
                "boundary_share": nan(self.boundary_share), "errors_on_boundary_share": nan(self.error_boundary_share),
                **{k: getattr(self, k).to_json(names) for k in ("all", "boundary", "interior")}}


def score_map(reference: np.ndarray, predicted: np.ndarray, codes: list[int] | None = None,
              distance: float = BOUNDARY_DISTANCE, mask: np.ndarray | None = None) -> MapScore:
    """Score a class map against a reference map of the same shape.

    Scored pixels: labelled in ``reference`` (> 0), classified in ``predicted`` (finite, not 0)
    and, if given, inside ``mask`` (e.g. not a training pixel). Boundary pixels are found on the
    whole reference, so an edge just outside the mask still counts.
    """
    ref = np.asarray(reference)
    pred = np.asarray(predicted)
    if ref.shape != pred.shape:
        raise BdgfError(f"the map ({pred.shape[1]} x {pred.shape[0]}) and the reference "
                        f"({ref.shape[1]} x {ref.shape[0]}) differ in size; read both on the same grid")
    edge = boundary_mask(ref, distance)
    with np.errstate(invalid="ignore"):
        scored = (ref > 0) & np.isfinite(pred) & (pred != 0)
    if mask is not None:
        scored &= np.asarray(mask, bool)
    if not scored.any():
        raise BdgfError("no pixel is both labelled in the reference and classified in the map; check that they "
                        "cover the same area")
    r = ref[scored].astype(np.int64)
    p = pred[scored].astype(np.int64)
    b = edge[scored]
    codes = sorted(np.unique(r).tolist()) if codes is None else list(codes)
    wrong = r != p
    return MapScore(assess(r, p, codes), assess(r[b], p[b], codes), assess(r[~b], p[~b], codes), float(distance),
                    float(b.mean()), float(b[wrong].mean()) if wrong.any() else float("nan"))
