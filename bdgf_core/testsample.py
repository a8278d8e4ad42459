"""The held-out test of a training run on a capped, stratified sample of the test pixels (issue 16).

Training ends by predicting its held-out test pixels. On a scene whose held-out polygons are large
that cost over a quarter of the run (demo scene, 30 epochs: 15,839 test pixels, 24-25 s against
48-58 s of training; with validation, 38 % of the run; docs/bench/evaluation.md). The report's test
figure is a check on the run, not the map's assessment (that is 'Assess accuracy' on the classified
map, every pixel), so it is estimated from a sample:

* **Strata are the reference classes.** Each class gets an equal part of the cap (a class with
  fewer test pixels gives all of them, the rest goes to the others), so every class's producer's
  accuracy has about the same precision and AA is close to as precise as the cap allows.
* **Estimates weight each class by its test pixels** (N_h / n_h): the estimated confusion matrix is
  the sample's rows scaled to the class's test pixels, so OA, Kappa and user's accuracy are those of
  the whole test set, not of an equal-class sample (Olofsson et al. 2014, strata = reference classes).
* **95 % intervals of the whole held-out set's figures**: they cover the sampling of those pixels
  only, not how another set of test polygons would score. Stratified-sampling variances with the
  finite-population correction (Cochran): Var(OA) = sum_h (N_h / N)^2 (1 - n_h / N_h) p_h (1 - p_h)
  / (n_h - 1); AA's is the mean of the classes'. Choice: p_h is the plus-four proportion
  (correct + 2) / (n_h + 4), so that a class with no error in its sample still carries uncertainty
  (conservative for small samples); a class given whole (n_h = N_h) carries none. User's accuracy,
  a ratio of two estimates, gets the linearised (ratio-estimator) variance over the strata, with
  add-one proportions (m_hj + 1) / (n_h + 2): without them a rare commission error that the sample
  missed gave an interval of width 0 that held the true figure in 55 % of draws (tests/test_testsample.py).

The sample is drawn from the seed in its own random stream, so the same run tests the same pixels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import BdgfError
from .metrics import Accuracy, assess

#: Test pixels predicted at the end of training by default. On the demo scene (7 classes) it keeps
#: evaluation under a fifth of the run (docs/bench/evaluation.md); the 95 % interval of OA is about
#: +-1 point at 95 % accuracy (+-1.6 at 76.5 % on the hard scene).
TEST_CAP = 2000

Z95 = 1.959964


def interval(value: float, half: float) -> tuple[float, float]:
    """A 95 % interval (percent) from an estimate and its half-width, clipped to 0-100."""
    return max(value - half, 0.0), min(value + half, 100.0)


def allocate(counts: np.ndarray, cap: int) -> np.ndarray:
    """Pixels to draw from each class: an equal share of ``cap``, at most the class's ``counts``.

    Classes smaller than the share give all their pixels and the rest is shared among the others;
    the last few pixels of an uneven division go to the largest classes."""
    counts = np.asarray(counts, np.int64)
    take = np.zeros_like(counts)
    rest = min(int(cap), int(counts.sum()))
    while rest > 0:
        room = np.flatnonzero(take < counts)
        share = max(rest // room.size, 1)
        for i in sorted(room, key=lambda i: (-counts[i], i)):
            add = min(share, int(counts[i] - take[i]), rest)
            take[i] += add
            rest -= add
            if rest == 0:
                break
    return take


def draw_test_sample(labels: np.ndarray, cap: Optional[int], seed: int) -> np.ndarray:
    """Indices (sorted) into ``labels`` of the stratified test sample; all of them when the cap is
    0 / None or at least their number."""
    labels = np.asarray(labels).ravel()
    if not cap or labels.size <= cap:
        return np.arange(labels.size)
    classes, counts = np.unique(labels, return_counts=True)
    if cap < classes.size:
        raise BdgfError(f"the test cap ({cap}) is smaller than the number of classes in the test pixels "
                        f"({classes.size}); give at least {classes.size}, or 0 to test every held-out pixel")
    rng = np.random.default_rng([seed, 17])  # its own stream: training draws nothing from it
    take = allocate(counts, cap)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def assess_sample(reference: np.ndarray, predicted: np.ndarray, codes: list[int],
                  test_labels: np.ndarray) -> Accuracy:
    """Accuracy of the whole test set estimated from a stratified sample of it.

    ``reference`` / ``predicted``: class codes of the sampled pixels; ``test_labels``: the reference
    codes of every test pixel (the strata sizes). The confusion matrix returned is the estimated one
    of the whole test set (float); OA, AA, Kappa, producer's and user's accuracy are read from it, and
    ``sample`` holds the sizes, the sample's own counts and the 95 % half-widths."""
    plain = assess(reference, predicted, codes)
    cm = plain.confusion.astype(float)
    k = cm.shape[0]
    sizes = {int(c): int(n) for c, n in zip(*np.unique(np.asarray(test_labels).ravel(), return_counts=True))}
    big_n = np.array([sizes.get(int(c), 0) for c in plain.codes], float)
    small_n = cm.sum(1)
    if np.any((small_n == 0) & (big_n > 0)):
        raise ValueError("every class of the test pixels needs at least one sampled pixel")
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(small_n[:, None] > 0, cm / small_n[:, None], 0.0)  # share of stratum h predicted j
        est = big_n[:, None] * q  # M_hj = N_h m_hj / n_h: the whole test set's matrix
        total = est.sum()
        diag = np.diag(est)
        producers = np.diag(q) * 100
        predicted_j = est.sum(0)
        users = diag / predicted_j * 100
        oa = diag.sum() / total * 100
        pe = (est.sum(0) * est.sum(1)).sum() / total ** 2
        kappa = (oa / 100 - pe) / (1 - pe) * 100 if pe < 1 else float("nan")
        fpc = np.where(big_n > 0, 1 - small_n / big_n, 0.0)
        dof = np.maximum(small_n - 1, 1)
        # a class's own accuracy: plus-four proportion (see the module's docstring)
        p_adj = (np.diag(cm) + 2) / (small_n + 4)
        var_h = np.where(small_n > 0, fpc * p_adj * (1 - p_adj) / dof, 0.0)
        # user's accuracy R_j = M_jj / sum_h M_hj, a ratio: its linearised variance sums, over the strata,
        # the variance of d = y - R_j x (y: reference j and predicted j, x: predicted j)
        r = diag / predicted_j
        a = np.where(np.eye(k, dtype=bool), 1 - r[None, :], -r[None, :])  # d where x = 1, per (h, j)
        q_adj = (cm + 1) / (small_n[:, None] + 2)  # add-one, so that an error the sample missed still counts
        var_d = a ** 2 * q_adj * (1 - q_adj) * small_n[:, None] / dof[:, None]
        var_users = (big_n[:, None] ** 2 * fpc[:, None] * var_d / np.maximum(small_n, 1)[:, None]).sum(0)
        users_half = Z95 * np.sqrt(var_users) / predicted_j * 100
    present = big_n > 0
    aa = float(np.nanmean(producers[present])) if present.any() else float("nan")
    oa_half = Z95 * np.sqrt(((big_n / big_n.sum()) ** 2 * var_h).sum()) * 100
    aa_half = Z95 * np.sqrt(var_h[present].sum()) / max(int(present.sum()), 1) * 100
    sample = {"n": int(small_n.sum()), "population": int(big_n.sum()),
              "oa_ci95": round(float(oa_half), 4), "aa_ci95": round(float(aa_half), 4),
              "test_pixels": [int(v) for v in big_n], "sampled": [int(v) for v in small_n],
              "producers_ci95": [round(float(v), 4) for v in Z95 * np.sqrt(var_h) * 100],
              "users_ci95": [round(float(v), 4) if np.isfinite(v) else None for v in users_half],
              "counts": plain.confusion.tolist()}
    return Accuracy(plain.codes, est, float(oa), aa, float(kappa), producers.tolist(), users.tolist(), sample)
