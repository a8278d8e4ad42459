"""The random-forest baseline: per-pixel spectral + SAR values, scikit-learn's forest.

The fitted trees are stored as plain arrays in the model file (no pickle), and prediction
walks them with numpy, so loading a model runs no code and needs no scikit-learn.
"""
from __future__ import annotations

import numpy as np

from .normalise import apply


def fit_forest(x: np.ndarray, y: np.ndarray, trees: int = 200, seed: int = 0, n_jobs: int = -1,
               progress=None, cancelled=None, chunk: int = 20) -> dict[str, np.ndarray]:
    """Fit on (N, F) features and codes ``y``; return the forest as arrays.

    The trees grow ``chunk`` at a time (warm start: the same forest as one fit with the same seed),
    so a cancel is seen within one chunk and progress moves while the forest grows.
    """
    from sklearn.ensemble import RandomForestClassifier

    from .errors import Cancelled

    rf = RandomForestClassifier(n_estimators=0, random_state=seed, n_jobs=n_jobs, warm_start=True)
    grown = 0
    while grown < trees:
        if cancelled is not None and cancelled():
            raise Cancelled()
        grown = min(trees, grown + chunk)
        rf.set_params(n_estimators=grown)
        rf.fit(x, y)
        if progress is not None:
            progress(grown / trees, f"{grown}/{trees} trees")
    return forest_arrays(rf)


def forest_arrays(rf) -> dict[str, np.ndarray]:
    """Concatenate the trees of a fitted forest into flat node arrays with per-tree offsets."""
    left, right, feat, thr, val, offsets = [], [], [], [], [], [0]
    for est in rf.estimators_:
        t = est.tree_
        off = offsets[-1]
        cl, cr = t.children_left.copy(), t.children_right.copy()
        cl[cl >= 0] += off
        cr[cr >= 0] += off
        v = t.value[:, 0, :].astype(np.float64)
        v /= v.sum(1, keepdims=True)
        left.append(cl); right.append(cr); feat.append(t.feature); thr.append(t.threshold); val.append(v)
        offsets.append(off + t.node_count)
    return {
        "left": np.concatenate(left).astype(np.int32),
        "right": np.concatenate(right).astype(np.int32),
        "feature": np.concatenate(feat).astype(np.int32),
        "threshold": np.concatenate(thr).astype(np.float64),
        "value": np.concatenate(val).astype(np.float32),
        "roots": np.asarray(offsets[:-1], np.int32),
        "classes": np.asarray(rf.classes_, np.int32),
    }


def forest_proba(forest: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) as scikit-learn's predict_proba: the mean of the trees' leaves."""
    left, right, feature, threshold = forest["left"], forest["right"], forest["feature"], forest["threshold"]
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    out = np.zeros((n, forest["value"].shape[1]), np.float64)
    rows = np.arange(n)
    for root in forest["roots"]:
        node = np.full(n, root, np.int32)
        while True:
            inner = left[node] >= 0
            if not inner.any():
                break
            f = np.where(inner, feature[node], 0)
            go_left = x[rows, f] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        out += forest["value"][node]
    return (out / len(forest["roots"])).astype(np.float32)


def pixel_features(spectral: np.ndarray, sar: np.ndarray, stats) -> np.ndarray:
    """(C, ...) rasters -> (N, F) normalised features, one row per pixel.

    ``stats`` = (spectral mean, spectral std, SAR mean, SAR std).
    """
    sm, ss, am, asd = stats
    s = apply(spectral, sm, ss).reshape(spectral.shape[0], -1)
    a = apply(sar, am, asd).reshape(sar.shape[0], -1)
    return np.concatenate([s, a]).T


class ForestPredictor:
    """Predicts class probabilities for blocks of pixels (no spatial context: halo 0)."""

    halo = 0

    def __init__(self, forest: dict[str, np.ndarray], spectral_mean, spectral_std, sar_mean, sar_std) -> None:
        self.forest = forest
        self.stats = (np.asarray(spectral_mean), np.asarray(spectral_std), np.asarray(sar_mean), np.asarray(sar_std))
        self.codes = forest["classes"].tolist()

    def pixel_features(self, spectral: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return pixel_features(spectral, sar, self.stats)

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """(C_s, h, w), (C_a, h, w) -> probabilities (classes, h, w); NaN inputs are filled with 0."""
        h, w = spectral.shape[1:]
        x = np.nan_to_num(self.pixel_features(spectral, sar), nan=0.0)
        return forest_proba(self.forest, x).T.reshape(-1, h, w)
