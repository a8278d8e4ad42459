"""Training, validation and test pixels: the paper's random pixel split and two spatial splits.

- ``pixels``: N random labelled pixels per class for training, the rest for testing (the paper's
  protocol; neighbours of training pixels end up in the test set, which flatters accuracy).
- ``polygons``: whole ground-truth regions (polygons, or connected regions of a label raster) go
  to one side, per class; N training pixels are drawn from the training regions only.
- ``blocks``: a grid of square blocks; each block goes whole to one side.
The validation share is taken the same way as the test split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BdgfError
from .groundtruth import GroundTruth

STRATEGIES = ("polygons", "blocks", "pixels")
SMALL_CLASS_TEST_SHARE = 0.3  # a class with <= N pixels keeps this share for testing (pixel split)


@dataclass
class Split:
    train: np.ndarray            # flat pixel indices (row * width + col)
    val: np.ndarray
    test: np.ndarray
    strategy: str
    seed: int
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def split_samples(gt: GroundTruth, samples_per_class: int, strategy: str = "polygons", seed: int = 0,
                  validation_share: float = 0.0, test_share: float = 0.5, block_size: int = 32,
                  valid: np.ndarray | None = None) -> Split:
    """Split the labelled pixels of ``gt`` (optionally only where ``valid``) into train/val/test."""
    if strategy not in STRATEGIES:
        raise BdgfError(f"unknown split {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if samples_per_class <= 0:
        raise BdgfError(f"samples per class must be positive, got {samples_per_class}")
    if not 0.0 <= validation_share < 1.0:
        raise BdgfError(f"the validation share must be in [0, 1), got {validation_share}")
    if not 0.0 < test_share < 1.0:
        raise BdgfError(f"the test share must be in (0, 1), got {test_share}")
    if strategy == "blocks" and block_size < 2:
        raise BdgfError(f"the block size must be at least 2 pixels, got {block_size}")
    labels = gt.labels.ravel()
    lab_ok = labels > 0
    if valid is not None:
        lab_ok &= valid.ravel()
    rng = np.random.default_rng(seed)
    warnings: list[str] = []
    names = {c.code: c.name for c in gt.classes}
    codes = [c for c in sorted(names) if (lab_ok & (labels == c)).any()]
    for c in sorted(set(names) - set(codes)):
        raise BdgfError(f"class {names[c]!r} (code {c}) has no labelled pixel inside the raster's valid area; "
                        "remove it or add polygons for it inside the raster")

    if strategy == "blocks":
        width = gt.labels.shape[1]
        rows, cols = np.divmod(np.arange(labels.size), width)
        nbx = -(-width // block_size)
        units = (rows // block_size) * nbx + cols // block_size + 1
        ids = np.unique(units[lab_ok])
        held = set(ids[rng.random(ids.size) < test_share].tolist())
        unit_test = {u: (u in held) for u in ids.tolist()}
    else:
        units = gt.regions.ravel()
        unit_test = None

    train, val, test = [], [], []
    summary: dict = {"strategy": strategy, "seed": seed, "samples_per_class": samples_per_class,
                     "validation_share": validation_share, "classes": {}}
    for c in codes:
        idx = np.flatnonzero(lab_ok & (labels == c))
        tr_pool, te, units_info = _class_sides(idx, units, strategy, unit_test, test_share, rng, names[c], warnings)
        # Validation: whole regions/blocks of the training side when the split is spatial.
        va = np.empty(0, np.int64)
        if validation_share > 0 and tr_pool.size:
            tr_pool, va = _take_validation(tr_pool, units, strategy, validation_share, rng, names[c], warnings)
        n = samples_per_class
        if strategy == "pixels" and tr_pool.size + te.size <= n:
            # Too few pixels for N training pixels and a test set: all but a test share.
            allp = rng.permutation(np.concatenate([tr_pool, te]))
            k = max(1, int(round(allp.size * SMALL_CLASS_TEST_SHARE)))
            tr_pool, te = allp[k:], allp[:k]
            warnings.append(f"class {names[c]!r} has only {allp.size} labelled pixels, fewer than the "
                            f"{n} requested; it gets {tr_pool.size} for training and {te.size} for testing")
        elif tr_pool.size < n:
            if strategy != "pixels":
                warnings.append(f"class {names[c]!r} has {tr_pool.size} pixels in its training "
                                f"{'regions' if strategy == 'polygons' else 'blocks'}, fewer than the {n} "
                                "requested; all of them are used")
        chosen = rng.permutation(tr_pool)[:n]
        if strategy == "pixels":
            unused = np.setdiff1d(tr_pool, chosen)
            te = np.concatenate([te, unused])
        if chosen.size == 0:
            raise BdgfError(f"class {names[c]!r} has no training pixel; add ground truth for it or lower "
                            "the test share")
        if te.size == 0:
            warnings.append(f"class {names[c]!r} has no test pixel; its accuracy cannot be assessed")
        train.append(chosen)
        val.append(va)
        test.append(te)
        summary["classes"][str(c)] = {"name": names[c], "train": int(chosen.size), "validation": int(va.size),
                                      "test": int(te.size), **units_info}
    sp = Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(val)), np.sort(np.concatenate(test)),
               strategy, seed, summary, warnings)
    summary["train"], summary["validation"], summary["test"] = int(sp.train.size), int(sp.val.size), int(sp.test.size)
    summary["warnings"] = warnings
    return sp


def _class_sides(idx, units, strategy, unit_test, test_share, rng, name, warnings):
    """(training pool, test pixels, info) for one class."""
    if strategy == "pixels":
        return idx, np.empty(0, np.int64), {}
    u = units[idx]
    if strategy == "blocks":
        is_test = np.array([unit_test[x] for x in u.tolist()], bool)
        tr, te = idx[~is_test], idx[is_test]
        info = {"train_blocks": int(np.unique(u[~is_test]).size), "test_blocks": int(np.unique(u[is_test]).size)}
        if tr.size == 0 or te.size == 0:
            warnings.append(f"class {name!r}: all its blocks fell on one side; falling back to a random "
                            "pixel split for this class only (its test pixels neighbour training pixels)")
            perm = rng.permutation(idx)
            k = max(1, int(round(idx.size * test_share)))
            tr, te = perm[k:], perm[:k]
        return tr, te, info
    # polygons: whole regions per class, aiming at the test share of pixels
    ids, sizes = np.unique(u, return_counts=True)
    if ids.size < 2:
        warnings.append(f"class {name!r} has a single polygon, so it cannot be tested on separate regions; "
                        "falling back to a random pixel split for this class only")
        perm = rng.permutation(idx)
        k = max(1, int(round(idx.size * test_share)))
        return perm[k:], perm[:k], {"train_polygons": 1, "test_polygons": 1, "fallback": "pixels"}
    order = rng.permutation(ids.size)
    target = test_share * idx.size
    held, acc = [], 0
    for j in order:
        if acc >= target or len(held) == ids.size - 1:
            break
        held.append(ids[j])
        acc += sizes[j]
    is_test = np.isin(u, held)
    return idx[~is_test], idx[is_test], {"train_polygons": int(ids.size - len(held)), "test_polygons": len(held)}


def _take_validation(pool, units, strategy, share, rng, name, warnings):
    if strategy == "pixels":
        perm = rng.permutation(pool)
        k = int(round(pool.size * share))
        return perm[k:], perm[:k]
    u = units[pool]
    ids, sizes = np.unique(u, return_counts=True)
    if ids.size < 2:
        warnings.append(f"class {name!r} has too few training regions for a spatially separate "
                        "validation set; it has none")
        return pool, np.empty(0, np.int64)
    target, held, acc = share * pool.size, [], 0
    for j in rng.permutation(ids.size):
        if acc >= target or len(held) == ids.size - 1:
            break
        held.append(ids[j])
        acc += sizes[j]
    is_val = np.isin(u, held)
    return pool[~is_val], pool[is_val]
