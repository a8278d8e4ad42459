"""Training-time patch augmentations for class edges (issue 15): flips / rotations and mixed patches.

Training pixels come from polygons that stop short of the class borders, so patches centred on a
border pixel, half one class and half another, are rare or absent in training. A mixed patch
makes one: the far side of a random line that misses the centre pixel is copied from a patch of
another class, and the label stays the centre's. Flips and 90-degree rotations show each
border in all eight orientations.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def dihedral(patches: Sequence[Optional[Tensor]], k: np.ndarray) -> list[Optional[Tensor]]:
    """Apply transform k[i] in 0..7 (k % 4 quarter turns, then a left-right flip when k >= 4) to sample i
    of each (N, C, p, p) tensor; the centre pixel stays the centre."""
    out = [None if x is None else x.clone() for x in patches]
    for t in range(8):
        sel = np.flatnonzero(k == t)
        if t == 0 or sel.size == 0:
            continue
        idx = torch.as_tensor(sel, device=next(x for x in patches if x is not None).device)
        for x, y in zip(patches, out):
            if x is None:
                continue
            z = torch.rot90(x[idx], t % 4, dims=(-2, -1))
            y[idx] = torch.flip(z, dims=(-1,)) if t >= 4 else z
    return out


def far_side_masks(n: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """(n, p, p) bool: the pixels beyond a random line at distance 0.5..p//2 from the centre, in a random
    direction. The centre pixel is never inside; at distance 0.5 the line runs next to it."""
    r = p // 2
    theta = rng.uniform(0, 2 * np.pi, n)
    dist = rng.uniform(0.5, max(r, 0.5), n)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    along = dx[None] * np.cos(theta)[:, None, None] + dy[None] * np.sin(theta)[:, None, None]
    return along >= dist[:, None, None]


def partners(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sample, the index of a random sample of another class in the batch (-1 when the batch has one class)."""
    out = np.full(labels.size, -1, np.int64)
    for c in np.unique(labels):
        mine, others = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        if others.size:
            out[mine] = others[rng.integers(0, others.size, mine.size)]
    return out


def mix_patches(patches: Sequence[Optional[Tensor]], others: Sequence[Optional[Tensor]], masks: np.ndarray
                ) -> list[Optional[Tensor]]:
    """Each input's patches with the pixels of ``masks`` (n, p, p) taken from ``others`` (the same shapes)."""
    ref = next(x for x in patches if x is not None)
    m = torch.as_tensor(masks, device=ref.device)[:, None]  # (n, 1, p, p)
    return [None if x is None else torch.where(m, o, x) for x, o in zip(patches, others)]


class EdgePlan:
    """The draws of one global training batch: per sample a symmetry k (0..7), whether it is mixed, the
    partner pixel (another class in the batch, -1 for none) and the line (:func:`far_side_masks`).

    Drawn for the whole batch from ``key`` and looked up per pixel, so a process of a torchrun job or an
    out-of-memory micro-batch augments its samples exactly as one process with the whole batch does.
    """

    def __init__(self, batch: np.ndarray, labels: np.ndarray, patch: int, mix_share: float, key: Sequence[int]
                 ) -> None:
        rng = np.random.default_rng([int(k) for k in key])
        n = batch.size
        self.pos = {int(b): i for i, b in enumerate(batch)}
        self.k = rng.integers(0, 8, n)
        partner = partners(labels[batch], rng)
        self.partner = np.where(partner >= 0, batch[np.maximum(partner, 0)], -1)
        self.mixed = (rng.random(n) < mix_share) & (partner >= 0)
        self.masks = far_side_masks(n, patch, rng)

    def rows(self, sub: np.ndarray) -> np.ndarray:
        return np.array([self.pos[int(i)] for i in sub], np.int64)


def augment_batch(patches: Sequence[Optional[Tensor]], sub: np.ndarray, batch: np.ndarray, labels: np.ndarray,
                  fetch: Callable[[np.ndarray], Sequence[Optional[Tensor]]], flips: bool, mix_share: float,
                  key: Sequence[int]) -> list[Optional[Tensor]]:
    """The patches of training pixels ``sub`` (part of the global ``batch``; indices into ``labels``) with the
    edge augmentations; the same tensors when both are off. ``fetch(idx)`` cuts the patches of other
    training pixels (the partners of mixed patches). ``key``: integers that seed the batch's draws
    (the run's seed, epoch, batch), so a run is repeatable and a resumed run draws what the
    uninterrupted one drew.
    """
    if not flips and mix_share <= 0:
        return list(patches)
    ref = next(x for x in patches if x is not None)
    plan = EdgePlan(np.asarray(batch), np.asarray(labels), ref.shape[-1], mix_share, key)
    rows = plan.rows(sub)
    out = list(patches)
    mixed = rows[plan.mixed[rows]]
    if mixed.size and ref.shape[-1] >= 3:  # before the flips, so the mixed borders turn with the rest
        at = torch.as_tensor(np.flatnonzero(plan.mixed[rows]), device=ref.device)
        others = fetch(plan.partner[mixed])
        part = mix_patches([None if x is None else x[at] for x in out], others, plan.masks[mixed])
        out = [None if x is None else x.index_copy(0, at, y) for x, y in zip(out, part)]
    if flips:
        out = dihedral(out, plan.k[rows])
    return out
