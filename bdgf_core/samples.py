"""From rasters and ground truth to the labelled pixels a model trains and is tested on."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BdgfError
from .groundtruth import GroundTruth, load_ground_truth, merge_fixed, recolour, require_two_classes
from .normalise import band_stats
from .progress import Reporter
from .raster import RasterSource, RasterStack, open_stack
from .sampling import Split, split_fixed, split_samples


@dataclass
class TrainingData:
    spectral: RasterSource
    sar: RasterSource
    gt: GroundTruth
    split: Split
    spectral_stats: tuple[np.ndarray, np.ndarray]
    sar_stats: tuple[np.ndarray, np.ndarray]

    def codes(self) -> list[int]:
        return [c.code for c in self.gt.classes]


def open_inputs(spectral: str | os.PathLike | Sequence[str | os.PathLike],
                sar: str | os.PathLike | Sequence[str | os.PathLike], rep: Reporter,
                sar_resampling: str = "bilinear") -> tuple[RasterSource | RasterStack, RasterSource | RasterStack]:
    """The spectral raster(s) define the grid (the first file's); the SAR raster(s) are aligned onto it
    (resampled if needed, see :class:`bdgf_core.raster.RasterSource`). Several files are stacked band-wise."""
    spec = open_stack(spectral, what="spectral raster", log=rep.warning)
    if spec.bands < 2:
        raise BdgfError(f"the spectral raster {spec.path.name} has {spec.bands} band; a spectral raster needs at "
                        "least 2 bands (did you swap the spectral and SAR inputs?)")
    sar_src = open_stack(sar, spec.grid, what="SAR raster", resampling=sar_resampling, log=rep.warning)
    if sar_src.bands > spec.bands:
        raise BdgfError(f"the spectral raster {spec.path.name} has {spec.bands} bands but the SAR raster "
                        f"{sar_src.path.name} has {sar_src.bands}; did you swap the spectral and SAR inputs?")
    return spec, sar_src


def values_at(src: RasterSource, flat: np.ndarray, strip_rows: int = 256) -> np.ndarray:
    """(N, C) values of ``src`` at flat pixel indices, read in strips of rows (bounded memory)."""
    flat = np.asarray(flat, np.int64)
    out = np.empty((flat.size, src.bands), np.float32)
    rows, cols = np.divmod(flat, src.width)
    for r0 in range(0, src.height, strip_rows):
        sel = np.flatnonzero((rows >= r0) & (rows < r0 + strip_rows))
        if sel.size == 0:
            continue
        r1 = min(src.height, r0 + strip_rows)
        strip = src.read(r0, r1)
        out[sel] = strip[:, rows[sel] - r0, cols[sel]].T
    return out


def features_at(spectral: RasterSource, sar: RasterSource, flat: np.ndarray, stats, window: int = 1,
                strip_rows: int = 256) -> np.ndarray:
    """(N, F) forest features at flat pixel indices: per-pixel values, or window means (bounded memory).

    Windows are read in strips of rows with a halo, padded at the image's edges exactly as
    classification pads its blocks (``inference._pad``), so a pixel's features are the same here
    and in the classified map."""
    from .baseline import pixel_features

    if window == 1:
        return pixel_features(values_at(spectral, flat).T, values_at(sar, flat).T, stats)
    flat = np.asarray(flat, np.int64)
    halo, h, w = window // 2, spectral.height, spectral.width
    mode = "reflect" if min(h, w) > halo else "symmetric"
    out = np.empty((flat.size, spectral.bands + sar.bands), np.float32)
    rows, cols = np.divmod(flat, w)
    for r0 in range(0, h, strip_rows):
        r1 = min(h, r0 + strip_rows)
        sel = np.flatnonzero((rows >= r0) & (rows < r1))
        if sel.size == 0:
            continue
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        pads = ((0, 0), (halo - (r0 - a), halo - (b - r1)), (halo, halo))
        feats = pixel_features(np.pad(spectral.read(a, b), pads, mode=mode), np.pad(sar.read(a, b), pads, mode=mode),
                               stats, window)                                    # ((r1 - r0) * w, F)
        out[sel] = feats[(rows[sel] - r0) * w + cols[sel]]
    return out


def prepare_training(spectral: str, sar: str, groundtruth: str, class_field: str, samples_per_class: int,
                     split: str, seed: int, validation_share: float, block_size: int, rep: Reporter,
                     layer: str | None = None, test_groundtruth: str | None = None,
                     test_layer: str | None = None, sar_resampling: str = "bilinear",
                     class_name_field: str | None = None, unlabelled_value: float | None = None,
                     class_colors: dict[str, str] | None = None) -> TrainingData:
    """Open the inputs, read the ground truth onto the spectral grid and split it.

    With ``test_groundtruth`` (polygons or a label raster) the training ground truth is used whole
    for training and validation and the test layer gives the held-out pixels; ``split`` then
    says how the validation share is taken. Without it, ``split`` divides the one ground truth.
    """
    if test_layer and not test_groundtruth:
        raise BdgfError("a test layer name was given without a test ground truth; give --test-groundtruth too")
    spec, sar_src = open_inputs(spectral, sar, rep, sar_resampling)
    gt = load_ground_truth(groundtruth, spec.grid, class_field, layer, class_name_field=class_name_field,
                           unlabelled_value=unlabelled_value)
    gt.classes = recolour(gt.classes, class_colors)
    require_two_classes(gt)
    rep.info(f"ground truth: {len(gt.classes)} classes, {int(gt.labelled.sum())} labelled pixels")
    test_gt = None
    if test_groundtruth:
        test_gt = load_ground_truth(test_groundtruth, spec.grid, class_field, test_layer, classes=gt.classes,
                                    class_name_field=class_name_field, unlabelled_value=unlabelled_value)
        rep.info(f"test ground truth: {len(test_gt.classes)} classes, {int(test_gt.labelled.sum())} labelled "
                 "pixels")
        train_gt, gt = gt, merge_fixed(gt, test_gt)
    # Labelled pixels where an input is nodata cannot be used.
    labelled = gt.labelled if test_gt is None else gt.labelled | test_gt.labelled
    flat = np.flatnonzero(labelled.ravel())
    ok = np.isfinite(values_at(spec, flat)).all(1) & np.isfinite(values_at(sar_src, flat)).all(1)
    if not ok.any():
        raise BdgfError("every labelled pixel is nodata in the spectral or SAR raster; check the inputs' nodata "
                        "values and that they cover the ground truth")
    if not ok.all():
        rep.warning(f"{int((~ok).sum())} labelled pixels are nodata in an input and are left out")
    valid = np.zeros(gt.labels.size, bool)
    valid[flat[ok]] = True
    valid = valid.reshape(gt.labels.shape)
    if test_gt is None:
        sp = split_samples(gt, samples_per_class, split, seed, validation_share, block_size=block_size, valid=valid)
        label = "the paper's random pixel split (test pixels neighbour training pixels: accuracy is optimistic)" \
            if split == "pixels" else f"a spatial split by {split}"
    else:
        sp = split_fixed(train_gt, test_gt, samples_per_class, split, seed, validation_share, block_size, valid)
        sp.summary["groundtruth"] = str(Path(groundtruth).resolve())
        sp.summary["test_groundtruth"] = str(Path(test_groundtruth).resolve())
        sp.summary["layer"], sp.summary["test_layer"] = layer, test_layer
        label = (f"fixed sets: training from {Path(groundtruth).name}, testing on {Path(test_groundtruth).name}"
                 + (f" (validation by {split})" if validation_share > 0 else ""))
    for w in sp.warnings:
        rep.warning(w)
    rep.info(f"split: {label}; seed {seed}; {sp.train.size} training, {sp.val.size} validation, "
             f"{sp.test.size} test pixels")
    s_stats = band_stats(lambda a, b: spec.read(a, b), spec.height, spec.width, "spectral raster", seed)
    a_stats = band_stats(lambda a, b: sar_src.read(a, b), sar_src.height, sar_src.width, "SAR raster", seed)
    return TrainingData(spec, sar_src, gt, sp, s_stats, a_stats)
