"""Accuracy measures: confusion matrix, OA, AA, Kappa, producer's and user's accuracy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Accuracy:
    codes: list[int]
    confusion: np.ndarray       # rows: reference class, columns: predicted class
    oa: float                   # percent
    aa: float
    kappa: float
    producers: list[float]      # per class, percent (recall); NaN where the class has no reference pixel
    users: list[float]          # per class, percent (precision); NaN where nothing was predicted
    # set when the figures are estimated from a stratified sample of the test pixels (testsample.py);
    # ``confusion`` is then the estimated matrix of the whole test set (float). Keys: n, population,
    # oa_ci95, aa_ci95 (95 % half-widths, points), per class test_pixels, sampled, producers_ci95,
    # users_ci95, and counts (the sample's own confusion matrix)
    sample: Optional[dict] = None

    def to_json(self, names: dict[int, str] | None = None) -> dict:
        names = names or {}
        nan = lambda v: None if not np.isfinite(v) else round(float(v), 4)  # noqa: E731
        out = {
            "oa": nan(self.oa), "aa": nan(self.aa), "kappa": nan(self.kappa),
            "n": int(self.confusion.sum()),
            "classes": [{"code": c, "name": names.get(c, f"class {c}"), "producers": nan(p), "users": nan(u),
                         "reference_pixels": int(self.confusion[i].sum())}
                        for i, (c, p, u) in enumerate(zip(self.codes, self.producers, self.users))],
            "confusion": self.confusion.tolist(),
        }
        if self.sample is not None:  # the estimated matrix, in whole pixels; the sample's counts apart
            sm = self.sample
            out["n"], out["confusion"] = sm["population"], np.rint(self.confusion).astype(np.int64).tolist()
            out["sample"] = {k: v for k, v in sm.items() if k not in ("test_pixels", "sampled", "producers_ci95",
                                                                      "users_ci95")}
            for i, c in enumerate(out["classes"]):
                c.update(reference_pixels=sm["test_pixels"][i], test_pixels=sm["test_pixels"][i],
                         sampled=sm["sampled"][i], producers_ci95=sm["producers_ci95"][i],
                         users_ci95=sm["users_ci95"][i])
        return out


def assess(reference: np.ndarray, predicted: np.ndarray, codes: list[int] | None = None) -> Accuracy:
    """Compare class codes of the same pixels (1-D arrays); ``codes`` fixes the class order."""
    reference = np.asarray(reference).ravel()
    predicted = np.asarray(predicted).ravel()
    found = set(np.unique(reference).tolist()) | set(np.unique(predicted).tolist())
    # A prediction outside the listed classes is still an error: it gets a column of its own.
    codes = sorted(found) if codes is None else list(codes) + sorted(found - set(codes))
    k = len(codes)
    ri, pi = _positions(reference, codes), _positions(predicted, codes)
    ok = (ri >= 0) & (pi >= 0)
    cm = np.bincount(ri[ok] * k + pi[ok], minlength=k * k).reshape(k, k).astype(np.int64)
    n = cm.sum()
    diag = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prod = diag / cm.sum(1) * 100
        users = diag / cm.sum(0) * 100
        oa = diag.sum() / n * 100 if n else float("nan")
        pe = (cm.sum(0) * cm.sum(1)).sum() / float(n) ** 2 if n else float("nan")
        kappa = (oa / 100 - pe) / (1 - pe) * 100 if n and pe < 1 else float("nan")
    present = cm.sum(1) > 0
    aa = float(np.nanmean(prod[present])) if present.any() else float("nan")
    return Accuracy(list(codes), cm, float(oa), aa, float(kappa), prod.tolist(), users.tolist())


def _positions(values: np.ndarray, codes: list[int]) -> np.ndarray:
    """Index of each value in ``codes`` (sorted), -1 where it is not a listed code."""
    table = np.asarray(sorted(codes))
    pos = np.searchsorted(table, values)
    pos = np.clip(pos, 0, max(len(table) - 1, 0))
    hit = table[pos] == values if len(table) else np.zeros(values.shape, bool)
    order = np.argsort(np.argsort(codes))  # position in the caller's order
    return np.where(hit, order[pos] if len(table) else pos, -1)
