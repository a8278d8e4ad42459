"""Training, validation and test pixels: the paper's random pixel split and two spatial splits.

- ``pixels``: N random labelled pixels per class for training, the rest for testing (the paper's
  protocol; neighbours of training pixels end up in the test set, which flatters accuracy).
- ``polygons``: whole ground-truth regions (polygons, or connected regions of a label raster) go
  to one side, per class; N training pixels are drawn from the training regions only.
- ``blocks``: a grid of square blocks; each block goes whole to one side (training,
  validation or test) for every class.
A class that cannot be split spatially (a single polygon, or all its blocks on one side) falls
back to random pixels for that class only, with a warning that names it.

Validation (a share of each class's training-side pixels, picking the best epoch): whole blocks
under ``blocks``, random pixels under ``pixels``, and under ``polygons`` square blocks cut out of
the training regions (at most ``block_size`` pixels wide, smaller for small classes), never the
last block of a region: a whole dominant region taken for validation would leave training only
the small leftovers, so every training region keeps pixels for training.

The test pixels depend only on the ground truth, the strategy, the seed, the test share and the
block size: never on the validation share or the samples per class (each side draws from its own
random stream per class). So two models trained with the same seed and split, one with a
validation set (BDGF) and one without (the forest), are tested on the same pixels. Under
``pixels`` the test set is every pixel not drawn for training or validation, so it is the same
when the validation shares are.

``split_fixed`` is for a separate test layer: the training layer is used whole for training and
validation, the test layer for the held-out accuracy.
"""
from __future__ import annotations

import hashlib
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

    @property
    def fingerprint(self) -> str:
        """A short hash of the training, validation and test pixels: equal fingerprints, equal splits
        (the split summary carries it; benchmarks key their cached results by it)."""
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(part, np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:12]


def split_samples(gt: GroundTruth, samples_per_class: int, strategy: str = "polygons", seed: int = 0,
                  validation_share: float = 0.0, test_share: float = 0.5, block_size: int = 32,
                  valid: np.ndarray | None = None) -> Split:
    """Split the labelled pixels of ``gt`` (optionally only where ``valid``) into train/val/test."""
    _check(strategy, samples_per_class, validation_share, test_share, block_size)
    labels = gt.labels.ravel()
    lab_ok = gt.labelled.ravel()
    if valid is not None:
        lab_ok &= valid.ravel()
    warnings: list[str] = []
    names = {c.code: c.name for c in gt.classes}
    codes = [c for c in sorted(names) if (lab_ok & (labels == c)).any()]
    for c in sorted(set(names) - set(codes)):
        raise BdgfError(f"class {names[c]!r} (code {c}) has no labelled pixel inside the raster's valid area; "
                        "remove it or add polygons for it inside the raster")

    width = gt.labels.shape[1]
    if strategy == "blocks":
        rows, cols = np.divmod(np.arange(labels.size), width)
        nbx = -(-width // block_size)
        units = (rows // block_size) * nbx + cols // block_size + 1
        unit_side = _block_sides(np.unique(units[lab_ok]), test_share, validation_share, seed)
    else:
        units = gt.regions.ravel()
        unit_side = None

    train, val, test = [], [], []
    summary: dict = {"strategy": strategy, "seed": seed, "samples_per_class": samples_per_class,
                     "validation_share": validation_share, "classes": {}}
    for c in codes:
        idx = np.flatnonzero(lab_ok & (labels == c))
        n = samples_per_class
        if strategy == "pixels":
            chosen, va, te = _pixel_sides(idx, n, validation_share, seed, c, names[c], warnings)
            units_info: dict = {}
        else:
            tr_pool, va, te, units_info = _class_sides(idx, units, width, block_size, strategy, unit_side, test_share,
                                                       validation_share, seed, c, names[c], warnings)
            if tr_pool.size < n:
                warnings.append(f"class {names[c]!r} has {tr_pool.size} pixels in its training "
                                f"{'regions' if strategy == 'polygons' else 'blocks'}, fewer than the {n} "
                                "requested; all of them are used")
            chosen = _stream(seed, TRAIN, c).permutation(tr_pool)[:n]
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
    return _summarised(sp)


def _summarised(sp: Split) -> Split:
    """``sp`` with its totals, warnings and fingerprint written into its summary."""
    sp.summary.update(train=int(sp.train.size), validation=int(sp.val.size), test=int(sp.test.size),
                      warnings=sp.warnings, fingerprint=sp.fingerprint)
    return sp


TRAIN, VALIDATION, TEST = 0, 1, 2
ALL_CLASSES = 0  # the stream code of draws made for every class at once (the block sides)


def _stream(seed: int, side: int, code: int) -> np.random.Generator:
    """The random stream of one side (TRAIN, VALIDATION, TEST) of one class: the draws of one side never
    shift another's, so the test pixels do not depend on the validation share or the samples per class."""
    # seed entropy must be non-negative: a class coded -5 (label rasters keep negative codes) becomes 2^32 - 5
    return np.random.default_rng([seed, side, int(code) % 2**32])


def _block_sides(ids: np.ndarray, test_share: float, validation_share: float, seed: int) -> dict[int, int]:
    """Each block id -> TRAIN, VALIDATION or TEST, for all classes at once."""
    r = _stream(seed, TEST, ALL_CLASSES).random(ids.size)
    side = np.where(r < test_share, TEST, TRAIN)
    if validation_share > 0:
        v = _stream(seed, VALIDATION, ALL_CLASSES).random(ids.size)
        side[(side == TRAIN) & (v < validation_share)] = VALIDATION
    return dict(zip(ids.tolist(), side.tolist()))


def _pixel_sides(idx, n, validation_share, seed, code, name, warnings):
    """The paper's pixel split of one class: (training, validation, test pixels).

    N training pixels first, then the validation share of the class's pixels out of the rest; the
    test pixels are all the others."""
    perm = _stream(seed, TRAIN, code).permutation(idx)
    if idx.size <= n:
        # Too few pixels for N training pixels and a test set: all but a test share.
        k = max(1, int(round(idx.size * SMALL_CLASS_TEST_SHARE)))
        chosen, rest = perm[k:], perm[:k]
        warnings.append(f"class {name!r} has only {idx.size} labelled pixels, fewer than the "
                        f"{n} requested; it gets {chosen.size} for training and {rest.size} for testing")
        return chosen, np.empty(0, np.int64), rest
    chosen, rest = perm[:n], perm[n:]
    k = min(int(round(idx.size * validation_share)), rest.size - 1) if validation_share > 0 else 0
    rest = _stream(seed, VALIDATION, code).permutation(rest)
    return chosen, np.sort(rest[:k]), np.sort(rest[k:])


def _pixel_fallback(idx, test_share, validation_share, seed, code, name="", warnings=None):
    perm = _stream(seed, TEST, code).permutation(idx)
    # at least one test pixel, but never the last training pixel: a class must be learnt before it is tested
    k = min(max(1, int(round(idx.size * test_share))), idx.size - 1)
    if k == 0 and warnings is not None:
        warnings.append(f"class {name!r} has a single labelled pixel: it is used for training and the class has "
                        "no test pixel, so its accuracy is not measured; label more of it to test it")
    tr, te = perm[k:], perm[:k]
    k = int(round(tr.size * validation_share)) if validation_share > 0 else 0
    tr = _stream(seed, VALIDATION, code).permutation(tr)
    return tr[k:], tr[:k], te


def _class_sides(idx, units, width, block_size, strategy, unit_side, test_share, validation_share, seed, code, name,
                 warnings):
    """(training pool, validation, test pixels, info) for one class (polygons or blocks)."""
    u = units[idx]
    if strategy == "blocks":
        side = np.array([unit_side[x] for x in u.tolist()], np.int8)
        tr, va, te = idx[side == TRAIN], idx[side == VALIDATION], idx[side == TEST]
        info = {f"{k}_blocks": int(np.unique(u[side == s]).size)
                for k, s in (("train", TRAIN), ("validation", VALIDATION), ("test", TEST))}
        if tr.size == 0 or te.size == 0:
            warnings.append(f"class {name!r}: its blocks hold no {'training' if tr.size == 0 else 'test'} side; "
                            "falling back to a random pixel split for this class only (its test pixels neighbour "
                            "training pixels)")
            tr, va, te = _pixel_fallback(idx, test_share, validation_share, seed, code, name, warnings)
            info["fallback"] = "pixels"
        elif validation_share > 0 and va.size == 0:
            warnings.append(f"class {name!r} has no pixel in the validation blocks; it has no validation pixels")
        return tr, va, te, info
    # polygons: whole regions per class, aiming at the test share of pixels
    ids, sizes = np.unique(u, return_counts=True)
    if ids.size < 2:
        warnings.append(f"class {name!r} has a single polygon, so it cannot be tested on separate regions; "
                        "falling back to a random pixel split for this class only")
        tr, va, te = _pixel_fallback(idx, test_share, validation_share, seed, code, name, warnings)
        return tr, va, te, {"train_polygons": 1, "validation_polygons": int(va.size > 0), "test_polygons": 1,
                            "fallback": "pixels"}
    held = _whole_units(ids, sizes, test_share * idx.size, _stream(seed, TEST, code))
    is_test = np.isin(u, held)
    tr, te = idx[~is_test], idx[is_test]
    tr, va = _validation_blocks(tr, units, width, block_size, validation_share, _stream(seed, VALIDATION, code),
                                name, warnings)
    return tr, va, te, {"train_polygons": int(np.unique(units[tr]).size),
                        "validation_polygons": int(np.unique(units[va]).size), "test_polygons": len(held)}


def _whole_units(ids, sizes, target, rng) -> list:
    """Regions, in random order, until their pixels reach ``target`` (the test side); at least one is
    taken and at least one left out.

    A region that would leave the other side (training) with less than half of its own share is
    skipped for a later one: the last region taken could overshoot without limit, so a class of
    regions of 526, 390, 1538 and 1 pixels kept the 1-pixel region alone for training (hard scene,
    seed 4). When every region would, the smallest one is the test side.
    """
    total = int(np.sum(sizes))
    floor = (total - target) / 2  # the least the training side keeps, when some region allows it
    held, acc = [], 0
    for j in rng.permutation(ids.size):
        if acc >= target or len(held) == ids.size - 1:
            break
        if total - acc - sizes[j] < floor:
            continue
        held.append(ids[j])
        acc += sizes[j]
    return held or [ids[int(np.argmin(sizes))]]


def _validation_blocks(pool, regions, width, block_size, share, rng, name, warnings):
    """(training pool, validation pixels): square blocks cut out of the pool's regions, ``share`` of its pixels.

    A block is a square of the image grid inside one region. Its side shrinks with the target
    (about a quarter of the target's pixels per block, so the share is met closely) down to 2
    pixels, and is at most ``block_size``. Blocks are taken in random order while they bring the
    total nearer to the share; the last block a region has left is never taken, so every training region (the
    dominant one included) keeps training pixels.
    """
    empty = np.empty(0, np.int64)
    target = share * pool.size
    if share <= 0 or pool.size == 0:
        return pool, empty
    side = int(np.clip(np.sqrt(target / 4), 2, max(2, block_size)))
    rows, cols = np.divmod(pool, width)
    nbx = -(-width // side)
    block = (rows // side) * nbx + cols // side
    region = regions[pool].astype(np.int64)
    # one id per (region, block): the pieces a region is cut into
    keys, piece, sizes = np.unique(region * (block.max() + 1) + block, return_inverse=True, return_counts=True)
    piece_region = keys // (block.max() + 1)
    left = dict(zip(*np.unique(piece_region, return_counts=True)))  # pieces each region still trains on
    taken, acc = [], 0
    for j in rng.permutation(keys.size):
        # a piece that overshoots the target by more than half of itself is skipped: the share is met to the
        # nearest piece, and a dominant region can never go whole
        if left[piece_region[j]] <= 1 or acc + sizes[j] / 2 > target:
            continue
        left[piece_region[j]] -= 1
        taken.append(j)
        acc += sizes[j]
    if not taken:
        warnings.append(f"class {name!r} has too few training pixels for a validation set; it has none")
        return pool, empty
    is_val = np.isin(piece, taken)
    return pool[~is_val], pool[is_val]


def split_fixed(train: GroundTruth, test: GroundTruth, samples_per_class: int, strategy: str = "polygons",
                seed: int = 0, validation_share: float = 0.0, block_size: int = 32,
                valid: np.ndarray | None = None) -> Split:
    """A fixed training layer and a separate test layer (same grid, codes agreed).

    Training and validation pixels come from ``train`` only: the validation share is taken by
    ``strategy`` (whole polygons, whole blocks or random pixels), then up to ``samples_per_class``
    training pixels per class are drawn from the rest. Every labelled pixel of ``test`` whose class
    the training layer has is a test pixel, except where the two layers overlap.
    """
    _check(strategy, samples_per_class, validation_share, 0.5, block_size)
    if train.labels.shape != test.labels.shape:
        raise BdgfError("the training and test ground truths are on different grids; read both onto the "
                        "spectral raster's grid")
    warnings: list[str] = []
    names = {c.code: c.name for c in train.classes}
    tr_lab, te_lab = train.labels.ravel(), test.labels.ravel()
    ok = np.ones(tr_lab.size, bool) if valid is None else valid.ravel().astype(bool)
    tr_ok, te_ok = ok & train.labelled.ravel(), ok & test.labelled.ravel()
    both = tr_ok & te_ok
    if both.any():
        warnings.append(f"{int(both.sum())} pixels are labelled in both the training and the test layer; they "
                        "are left out of the test set")
        te_ok &= ~both
    unknown = sorted(set(np.unique(te_lab[te_ok]).tolist()) - set(names))
    if unknown:
        tnames = {c.code: c.name for c in test.classes}
        for c in unknown:
            warnings.append(f"class {tnames.get(c, f'class {c}')!r} (code {c}) of the test layer is not in the "
                            f"training layer; its {int((te_ok & (te_lab == c)).sum())} test pixels are left out")
        te_ok &= ~np.isin(te_lab, unknown)
    codes = [c for c in sorted(names) if (tr_ok & (tr_lab == c)).any()]
    for c in sorted(set(names) - set(codes)):
        raise BdgfError(f"class {names[c]!r} (code {c}) has no labelled pixel of the training layer inside the "
                        "raster's valid area; remove it or add training polygons for it inside the raster")
    width = train.labels.shape[1]
    if strategy == "blocks":
        rows, cols = np.divmod(np.arange(tr_lab.size), width)
        units = (rows // block_size) * -(-width // block_size) + cols // block_size + 1
        unit_side = _block_sides(np.unique(units[tr_ok]), 0.0, validation_share, seed)
    else:
        units, unit_side = train.regions.ravel(), None
    tr_regions, te_units = train.regions.ravel(), test.regions.ravel()
    summary: dict = {"strategy": "fixed", "validation_strategy": strategy, "seed": seed,
                     "samples_per_class": samples_per_class, "validation_share": validation_share, "classes": {}}
    train_sets, val_sets, test_sets = [], [], []
    n = samples_per_class
    for c in codes:
        pool = np.flatnonzero(tr_ok & (tr_lab == c))
        te = np.flatnonzero(te_ok & (te_lab == c))
        if strategy == "blocks":
            side = np.array([unit_side[x] for x in units[pool].tolist()], np.int8)
            tr, va = pool[side == TRAIN], pool[side == VALIDATION]
            if tr.size == 0:
                warnings.append(f"class {names[c]!r}: all its training blocks fell on the validation side; it has "
                                "no validation pixels")
                tr, va = pool, np.empty(0, np.int64)
            info = {"train_blocks": int(np.unique(units[tr]).size), "validation_blocks": int(np.unique(units[va]).size)}
        elif strategy == "pixels":
            k = int(round(pool.size * validation_share))
            perm = _stream(seed, VALIDATION, c).permutation(pool)
            tr, va = perm[k:], np.sort(perm[:k])
            info = {}
        else:
            tr, va = _validation_blocks(pool, units, width, block_size, validation_share, _stream(seed, VALIDATION, c),
                                        names[c], warnings)
            info = {"validation_polygons": int(np.unique(tr_regions[va]).size)} if strategy == "polygons" else {}
        # Regions of each layer on its side (a region of the training layer may hold validation pixels too).
        info["train_polygons"] = int(np.unique(tr_regions[tr]).size)
        info["test_polygons"] = int(np.unique(te_units[te]).size)
        if tr.size < n:
            warnings.append(f"class {names[c]!r} has {tr.size} training pixels in the training layer, fewer than "
                            f"the {n} requested; all of them are used")
        chosen = _stream(seed, TRAIN, c).permutation(tr)[:n]
        if te.size == 0:
            warnings.append(f"class {names[c]!r} has no pixel in the test layer; its accuracy cannot be assessed")
        train_sets.append(chosen)
        val_sets.append(va)
        test_sets.append(te)
        summary["classes"][str(c)] = {"name": names[c], "train": int(chosen.size), "validation": int(va.size),
                                      "test": int(te.size), **info}
    sp = Split(np.sort(np.concatenate(train_sets)), np.sort(np.concatenate(val_sets)),
               np.sort(np.concatenate(test_sets)), "fixed", seed, summary, warnings)
    return _summarised(sp)


def _check(strategy, samples_per_class, validation_share, test_share, block_size) -> None:
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
