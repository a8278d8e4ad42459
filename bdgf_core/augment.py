"""Training-time patch augmentations for class edges (issue 15): flips / rotations and mixed patches.

Training pixels come from polygons that stop short of the class borders, so patches centred on a
border pixel, half one class and half another, are rare or absent in training. A mixed patch
makes one: the far side of a random line that misses the centre pixel is copied from a patch of
another class, and the label stays the centre's. Flips and 90-degree rotations show each
border in all eight orientations.
"""
from __future__ import annotations

from typing import Optional, Sequence

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


def partners(labels: np.ndarray, rng: np.random.Generator, tries: int = 4) -> np.ndarray:
    """For each sample, the index of a random sample of another class in the batch, or -1 when none was found."""
    n = labels.size
    out = np.full(n, -1, np.int64)
    todo = np.arange(n)
    for _ in range(tries):
        if todo.size == 0:
            break
        cand = rng.integers(0, n, todo.size)
        ok = labels[cand] != labels[todo]
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return out


def mix_patches(patches: Sequence[Optional[Tensor]], labels: np.ndarray, share: float,
                rng: np.random.Generator) -> list[Optional[Tensor]]:
    """Mixed patches: for a ``share`` of the samples, the far side of a random line (:func:`far_side_masks`)
    is copied, in every input, from a sample of another class; the labels are unchanged."""
    ref = next(x for x in patches if x is not None)
    n, p = ref.shape[0], ref.shape[-1]
    chosen = np.flatnonzero(rng.random(n) < share)
    if chosen.size == 0 or p < 3:
        return list(patches)
    other = partners(labels, rng)[chosen]
    keep = other >= 0
    chosen, other = chosen[keep], other[keep]
    if chosen.size == 0:
        return list(patches)
    mask = torch.as_tensor(far_side_masks(chosen.size, p, rng), device=ref.device)[:, None]  # (m, 1, p, p)
    ci, oi = (torch.as_tensor(a, device=ref.device) for a in (chosen, other))
    out = []
    for x in patches:
        if x is None:
            out.append(None)
            continue
        y = x.clone()
        y[ci] = torch.where(mask, x[oi], x[ci])
        out.append(y)
    return out


def augment_batch(spec: Tensor, sar: Tensor, dif: Optional[Tensor], labels: Tensor, flips: bool, mix_share: float,
                  key: Sequence[int]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """The training batch with the edge augmentations of the config; unchanged (the same tensors) when both are off.

    ``key``: integers that seed the draws (the run's seed, epoch, batch...), so a run is repeatable and
    a resumed run draws what the uninterrupted one drew.
    """
    if not flips and mix_share <= 0:
        return spec, sar, dif
    rng = np.random.default_rng([int(k) for k in key])
    out: list[Optional[Tensor]] = [spec, sar, dif]
    if mix_share > 0:  # before the flips, so the mixed borders turn with the rest
        out = mix_patches(out, labels.detach().cpu().numpy(), mix_share, rng)
    if flips:
        out = dihedral(out, rng.integers(0, 8, spec.shape[0]))
    return out[0], out[1], out[2]
