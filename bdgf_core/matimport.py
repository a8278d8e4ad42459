"""The paper's scenes as distributed (MATLAB .mat files) -> GeoTIFFs the rest of the runtime reads.

Augsburg and Berlin come as ``data_HS_LR.mat`` (H x W x bands), ``data_SAR_HR.mat``
(H x W x bands), ``TrainImage.mat`` and ``TestImage.mat`` (H x W class codes, 0 = unlabelled),
each holding one variable named like its file. They carry no georeferencing, so the GeoTIFFs are
written on a plain pixel grid: **no CRS**, and the geotransform ``(0, 1, 0, H, 0, -1)``: one unit
per pixel, x = column, y = H - row, so the image covers (0, 0)-(W, H) with positive coordinates.
Polygons drawn on it in QGIS (in the same unitless coordinates) line up with its pixels.

Version 5/7 files are read with scipy; MATLAB v7.3 files (HDF5) need h5py.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import BdgfError
from .groundtruth import PALETTE
from .progress import Reporter
from .raster import Grid, create_raster, smallest_int_type

#: Class names of the paper's Table I, by scene; the label rasters carry them as categories.
SCENE_CLASSES = {
    "augsburg": ["Forest", "Residential Area", "Industrial Area", "Low Plants", "Allotment", "Commercial Area",
                 "Water"],
    "berlin": ["Forest", "Residential Area", "Industrial Area", "Low Plants", "Soil", "Allotment",
               "Commercial Area", "Water"],
}
#: (height, width) of the known releases, to recognise a scene with ``scene="auto"``.
SCENE_SHAPES = {"augsburg": {(332, 485)}, "berlin": {(1723, 476), (797, 220)}}
#: Variable names of the usual releases, tried before anything else.
KNOWN_VARIABLES = {
    "hyperspectral": ("data_HS_LR", "data_HS_HR", "data_HS", "HSI"),
    "SAR": ("data_SAR_HR", "data_SAR_LR", "data_SAR", "SAR"),
    "training labels": ("TrainImage", "TRLabel", "train"),
    "test labels": ("TestImage", "TSLabel", "test"),
}
CRS_NOTE = "none (a pixel grid: geotransform (0, 1, 0, H, 0, -1), x = column, y = H - row)"
H5PY_FIX = (".venv/bin/pip install h5py (in the runtime's environment), or re-save the file in MATLAB with "
            "save(..., '-v7')")


def pixel_grid(height: int, width: int) -> Grid:
    """The grid of an imported scene: no CRS, 1-unit pixels, the image in the positive quadrant."""
    return Grid(width, height, (0.0, 1.0, 0.0, float(height), 0.0, -1.0), "")


def read_mat(path: str | os.PathLike, what: str) -> np.ndarray:
    """The array of a .mat file: the variable named like the file or a known name, or its only one."""
    from scipy.io import loadmat, whosmat
    from scipy.io.matlab import matfile_version

    p = Path(path)
    if not p.is_file():
        raise BdgfError(f"the {what} file {p} does not exist; check the path")
    try:
        major, _ = matfile_version(str(p))
    except Exception as exc:  # scipy raises several types for files that are not MATLAB files
        raise BdgfError(f"the {what} file {p.name} is not a MATLAB .mat file ({exc}); give the .mat file of the "
                        "scene") from None
    if major == 2:
        return _read_hdf5(p, what)
    try:
        names = [n for n, _shape, cls in whosmat(str(p)) if cls not in ("struct", "cell", "char", "object")]
    except Exception as exc:
        raise BdgfError(f"the {what} file {p.name} cannot be read ({exc}); is it complete?") from None
    name = _pick(names, p, what)
    return np.asarray(loadmat(str(p), variable_names=[name])[name])


def _read_hdf5(p: Path, what: str) -> np.ndarray:
    try:
        import h5py
    except Exception:
        raise BdgfError(f"the {what} file {p.name} is a MATLAB v7.3 (HDF5) file; reading it needs the h5py "
                        f"package, which is not installed: {H5PY_FIX}") from None
    with h5py.File(str(p), "r") as f:
        names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and not k.startswith("#")]
        name = _pick(names, p, what)
        # MATLAB stores arrays column-major: HDF5 sees the axes reversed.
        return np.asarray(f[name]).T


def _pick(names: list[str], p: Path, what: str) -> str:
    if not names:
        raise BdgfError(f"the {what} file {p.name} holds no numeric array; give the scene's .mat file")
    for candidate in (p.stem, *KNOWN_VARIABLES.get(what, ())):
        if candidate in names:
            return candidate
    if len(names) == 1:
        return names[0]
    raise BdgfError(f"the {what} file {p.name} holds several arrays ({', '.join(names)}) and none is named like "
                    "the file; keep one array per file, named like the file")


def _image(a: np.ndarray, what: str, name: str) -> np.ndarray:
    """(H, W, C) from (H, W, C) or (H, W)."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.dtype.kind not in "biuf":
        raise BdgfError(f"the {what} array of {name} has shape {a.shape} ({a.dtype}); expected numbers of shape "
                        "height x width x bands")
    return a


def _labels(a: np.ndarray, what: str, name: str, shape: tuple[int, int]) -> np.ndarray:
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim != 2 or a.dtype.kind not in "biuf":
        raise BdgfError(f"the {what} of {name} have shape {a.shape}; expected a height x width array of class codes")
    if a.shape != shape:
        raise BdgfError(f"the {what} of {name} are {a.shape[0]} x {a.shape[1]} but the hyperspectral image is "
                        f"{shape[0]} x {shape[1]}; give the files of one scene")
    a = np.where(np.isfinite(a), a, 0) if a.dtype.kind == "f" else a
    if (a < 0).any() or (a != np.round(a)).any():
        raise BdgfError(f"the {what} of {name} hold negative or fractional values; expected class codes "
                        "(0 = unlabelled, 1, 2, 3...)")
    return a.astype(np.int64)


def detect_scene(shape: tuple[int, int], n_classes: int) -> str | None:
    for scene, shapes in SCENE_SHAPES.items():
        if shape in shapes and n_classes <= len(SCENE_CLASSES[scene]):
            return scene
    return None


def import_scene(hs: str | os.PathLike, sar: str | os.PathLike, train: str | os.PathLike, test: str | os.PathLike,
                 out_dir: str | os.PathLike, scene: str = "auto", rep: Reporter | None = None) -> dict:
    """Write spectral.tif, sar.tif, train_labels.tif and test_labels.tif into ``out_dir``."""
    from osgeo import gdal

    rep = rep or Reporter("none")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BdgfError(f"cannot create the output folder {out} ({exc.strerror}); choose a writable folder") from None
    rep.progress(0.0, "reading the labels")
    tr = read_mat(train, "training labels")
    te = read_mat(test, "test labels")
    rep.progress(0.05, "reading the hyperspectral image")
    spectral = _image(read_mat(hs, "hyperspectral"), "hyperspectral", Path(hs).name)
    height, width = spectral.shape[:2]
    tr = _labels(tr, "training labels", Path(train).name, (height, width))
    te = _labels(te, "test labels", Path(test).name, (height, width))
    codes = sorted(set(np.unique(tr[tr > 0]).tolist()) | set(np.unique(te[te > 0]).tolist()))
    if not codes:
        raise BdgfError("the training and test labels are all 0 (unlabelled); give the scene's label files")
    overlap = int(((tr > 0) & (te > 0)).sum())
    if overlap:
        rep.warning(f"{overlap} pixels are labelled in both the training and the test labels; training treats "
                    "them as training pixels only")
    if scene == "auto":
        scene = detect_scene((height, width), max(codes)) or "none"
    names = SCENE_CLASSES.get(scene, [])
    if names and max(codes) > len(names):
        raise BdgfError(f"the labels hold code {max(codes)} but the {scene} scene has {len(names)} classes; "
                        "use --scene none for other data")
    grid = pixel_grid(height, width)
    paths = {k: out / f"{k}.tif" for k in ("spectral", "sar", "train_labels", "test_labels")}
    rep.progress(0.15, f"writing {height} x {width} x {spectral.shape[2]} hyperspectral bands")
    _write_image(paths["spectral"], spectral, grid, "band", rep.sub(0.15, 0.6))
    del spectral
    rep.progress(0.6, "reading the SAR image")
    sar_a = _image(read_mat(sar, "SAR"), "SAR", Path(sar).name)
    if sar_a.shape[:2] != (height, width):
        raise BdgfError(f"the SAR image {Path(sar).name} is {sar_a.shape[0]} x {sar_a.shape[1]} but the hyperspectral "
                        f"image is {height} x {width}; give the SAR and hyperspectral files of one scene")
    _write_image(paths["sar"], sar_a, grid, "SAR band", rep.sub(0.65, 0.9))
    del sar_a
    rep.progress(0.9, "writing the label rasters")
    dtype = smallest_int_type(max(codes))
    cat_names = [names[c - 1] if c <= len(names) else f"class {c}" for c in codes]
    colors = [PALETTE[(c - 1) % len(PALETTE)] for c in codes]
    for key, lab in (("train_labels", tr), ("test_labels", te)):
        with create_raster(paths[key], grid, 1, dtype, 0, ["class code (0 = unlabelled)"]) as w:
            w.write(0, 0, lab)
            if dtype == gdal.GDT_Byte:
                w.set_categories(codes, cat_names, colors)
            else:
                w.ds.GetRasterBand(1).SetCategoryNames([""] + [cat_names[codes.index(i)] if i in codes else ""
                                                               for i in range(1, max(codes) + 1)])
    rep.progress(1.0)
    counts = {str(c): {"name": n, "train": int((tr == c).sum()), "test": int((te == c).sum())}
              for c, n in zip(codes, cat_names)}
    return {"spectral": str(paths["spectral"]), "sar": str(paths["sar"]),
            "train": str(paths["train_labels"]), "test": str(paths["test_labels"]),
            "scene": scene, "width": width, "height": height, "classes": len(codes),
            "train_pixels": int((tr > 0).sum()), "test_pixels": int((te > 0).sum()),
            "class_counts": counts, "crs": CRS_NOTE}


def _write_image(dest: Path, a: np.ndarray, grid: Grid, label: str, rep: Reporter) -> None:
    """(H, W, C) -> a float32 GeoTIFF, one band at a time (no second copy of the cube)."""
    from osgeo import gdal

    bands = a.shape[2]
    with create_raster(dest, grid, bands, gdal.GDT_Float32, None, [f"{label} {i + 1}" for i in range(bands)]) as w:
        for b in range(bands):
            rep.check_cancelled()
            w.ds.GetRasterBand(b + 1).WriteArray(np.ascontiguousarray(a[:, :, b], np.float32))
            rep.progress((b + 1) / bands)
