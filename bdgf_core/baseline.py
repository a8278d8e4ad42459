"""The random-forest baseline: per-pixel spectral + SAR values, or their window means, scikit-learn's forest.

The fitted trees are stored as plain arrays in the model file (no pickle), and prediction
walks them with numpy, so loading a model runs no code and needs no scikit-learn.

Window means (``mean3``, ``mean9``): every normalised band averaged over a 3 x 3 or 9 x 9 window,
what a careful user does by hand with a focal-mean tool before the forest; at the image edges
the window is reflected (numpy's "reflect", as classification pads its blocks), so training and
classification see the same values.
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


FEATURE_WINDOWS = {"pixel": 1, "mean3": 3, "mean9": 9}


def window_means(x: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) with a halo of size // 2 on every side -> (C, H - 2 halo, W - 2 halo) window means."""
    if size == 1:
        return x
    c = np.cumsum(np.cumsum(np.pad(x.astype(np.float64), ((0, 0), (1, 0), (1, 0))), 1), 2)
    total = c[:, size:, size:] - c[:, :-size, size:] - c[:, size:, :-size] + c[:, :-size, :-size]
    return (total / (size * size)).astype(np.float32)


def pixel_features(spectral: np.ndarray, sar: np.ndarray, stats, window: int = 1) -> np.ndarray:
    """(C, ...) rasters -> (N, F) normalised features, one row per pixel.

    ``stats`` = (spectral mean, spectral std, SAR mean, SAR std). With ``window`` > 1 the rasters
    are (C, h + 2 halo, w + 2 halo) blocks with a halo of window // 2 and the features are the
    window means of the h x w inner pixels (missing values count as 0, the scene's mean).
    """
    sm, ss, am, asd = stats
    if window > 1:
        x = np.nan_to_num(np.concatenate([apply(spectral, sm, ss), apply(sar, am, asd)]), nan=0.0)
        x = window_means(x, window)
        return x.reshape(x.shape[0], -1).T
    s = apply(spectral, sm, ss).reshape(spectral.shape[0], -1)
    a = apply(sar, am, asd).reshape(sar.shape[0], -1)
    return np.concatenate([s, a]).T


class ForestPredictor:
    """Predicts class probabilities for blocks of pixels (halo: half the feature window, 0 per pixel)."""

    def __init__(self, forest: dict[str, np.ndarray], spectral_mean, spectral_std, sar_mean, sar_std,
                 window: int = 1) -> None:
        self.forest = forest
        self.stats = (np.asarray(spectral_mean), np.asarray(spectral_std), np.asarray(sar_mean), np.asarray(sar_std))
        self.codes = forest["classes"].tolist()
        self.window = int(window)
        self.halo = self.window // 2

    def pixel_features(self, spectral: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return pixel_features(spectral, sar, self.stats, self.window)

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """(C_s, h + 2 halo, w + 2 halo), (C_a, ...) -> probabilities (classes, h, w); NaN inputs are filled with 0."""
        h, w = spectral.shape[1] - 2 * self.halo, spectral.shape[2] - 2 * self.halo
        x = np.nan_to_num(self.pixel_features(spectral, sar), nan=0.0)
        return forest_proba(self.forest, x).T.reshape(-1, h, w)
