"""Ground truth: labelled polygons (any OGR source) or a label raster, rasterised onto a grid.

The result holds, per pixel, the class code (``GroundTruth.unlabelled`` where there is none: 0, or
``UNLABELLED`` when a class is coded 0 or below) and the id of the region it came
from (the polygon, or the connected labelled region of a label raster, 8-connected), which the
spatial splits use. Class names and colours travel with the model.

A second ground truth (a fixed test layer, or the ground truth of an assessment) is read with
the classes of the first (``classes=``), so that a class name gets the same code in both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import BdgfError
from .raster import Grid, RasterSource

ogr.UseExceptions()

# Distinct, colour-blind-friendly defaults (Okabe-Ito and Tol), used when the data carry no colours.
PALETTE = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
           "#999933", "#882255", "#44aa99", "#332288", "#ddcc77", "#117733", "#88ccee", "#aa4499",
           "#661100", "#6699cc", "#888888"]


@dataclass
class ClassInfo:
    code: int
    name: str
    color: str

    def to_json(self) -> dict:
        return {"code": self.code, "name": self.name, "color": self.color}


#: The label of a pixel without a class when a class is coded 0 or below (codes are the user's own).
UNLABELLED = int(np.iinfo(np.int32).min)


@dataclass
class GroundTruth:
    labels: np.ndarray          # (H, W) int32 class codes, ``unlabelled`` = none
    regions: np.ndarray         # (H, W) int32 region ids, 0 = none
    classes: list[ClassInfo] = field(default_factory=list)
    source: str = ""
    unlabelled: int = 0         # the label of pixels without a class: 0, or UNLABELLED when 0 is a code

    @property
    def labelled(self) -> np.ndarray:
        """(H, W) bool: the pixels that have a class."""
        return self.labels != self.unlabelled

    def counts(self) -> dict[int, int]:
        codes, n = np.unique(self.labels[self.labelled], return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, n)}


def require_two_classes(gt: GroundTruth, what: str = "the ground truth") -> None:
    """Refuse to train on fewer than two classes (a one-class model scores 100 % and means nothing)."""
    if len(gt.classes) < 2:
        found = ", ".join(f"{c.name!r} (code {c.code})" for c in gt.classes) or "none"
        raise BdgfError(f"{what} {Path(gt.source).name} has {len(gt.classes)} class ({found}); a classifier needs at "
                        "least two: add labelled areas of another class, or check the class field")


MAX_CLASSES = 255  # label rasters with more distinct codes are most likely not label rasters


def load_ground_truth(path: str | os.PathLike, grid: Grid, class_field: str = "class",
                      layer: str | None = None, classes: list[ClassInfo] | None = None,
                      class_name_field: str | None = None, unlabelled_value: float | None = None) -> GroundTruth:
    """Read polygons (rasterised onto ``grid``) or a label raster (aligned to it).

    ``classes``: the classes already known (of the training layer, or of a model). A text class
    field then maps each known name to its known code (new names get new codes after them), and
    numeric codes without a name field take the known names.

    Polygons: the class field may be of any type; whole numbers (also as text or reals) are codes,
    anything else names. ``class_name_field`` (default: a field called "name", if any) gives the
    name of each numeric code. Label rasters: ``unlabelled_value`` (default: the raster's nodata
    value when it has one, else 0) marks the pixels without a class; every other value is a code.
    """
    p = Path(path)
    if not p.exists():
        raise BdgfError(f"the ground truth {p} does not exist; check the path")
    vec = _try_open_vector(p)
    if vec is not None:
        return _from_polygons(vec, p, grid, class_field, layer, classes, class_name_field)
    return _from_label_raster(p, grid, classes, unlabelled_value)


def recolour(classes: list[ClassInfo], colours: dict[str, str] | None) -> list[ClassInfo]:
    """The classes with the colours given by code or name (e.g. the layer's categorized style in QGIS)."""
    if not colours:
        return classes
    return [replace(c, color=colours.get(str(c.code), colours.get(c.name, c.color))) for c in classes]


def merge_fixed(train: GroundTruth, test: GroundTruth) -> GroundTruth:
    """One ground truth holding a training layer and a separate test layer (codes already agreed).

    Labels: the training layer's, and the test layer's where the training layer has none and
    the test class is a training class. Regions: the test layer's ids follow the training ones.
    The split (:func:`bdgf_core.sampling.split_fixed`) says which pixel is on which side.
    """
    known = np.array(sorted(c.code for c in train.classes), np.int32)
    use_test = ~train.labelled & test.labelled & np.isin(test.labels, known)
    labels = np.where(use_test, test.labels, train.labels).astype(np.int32)  # known codes: never train.unlabelled
    offset = int(train.regions.max(initial=0))
    regions = np.where(use_test, test.regions + offset, train.regions).astype(np.int32)
    return GroundTruth(labels, regions, list(train.classes), f"{train.source} + {test.source}", train.unlabelled)


def _try_open_vector(p: Path):
    try:
        ds = gdal.OpenEx(str(p), gdal.OF_VECTOR | gdal.OF_READONLY)
    except RuntimeError:
        return None
    if ds is None or ds.GetLayerCount() == 0:
        return None
    return ds


def _whole(v) -> int | None:
    """``v`` as a whole-number class code, or None when it is a name."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        f = float(str(v).strip())
    except ValueError:
        return None
    return int(f) if np.isfinite(f) and f == int(f) and abs(f) < 2**31 - 1 else None


def _from_polygons(ds, p: Path, grid: Grid, class_field: str, layer_name: str | None,
                   known: list[ClassInfo] | None = None, class_name_field: str | None = None) -> GroundTruth:
    lyr = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if lyr is None:
        raise BdgfError(f"{p.name} has no layer {layer_name!r}; name one of its layers")
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if class_field not in fields:
        raise BdgfError(f"the class field {class_field!r} is not in {p.name} (fields: {', '.join(fields) or 'none'}); "
                        "choose the field that holds the class codes or names")
    if class_name_field is not None and class_name_field not in fields:
        raise BdgfError(f"the class name field {class_name_field!r} is not in {p.name} (fields: "
                        f"{', '.join(fields) or 'none'}); choose the field that holds the class names, or none")
    name_field = class_name_field or ("name" if "name" in fields and class_field != "name" else None)
    color_field = next((f for f in ("color", "colour") if f in fields), None)

    # Read attributes once: the rasteriser burns a per-feature class index and a region id.
    raw, colors = [], {}
    lyr.ResetReading()
    for feat in lyr:
        v = feat.GetField(class_field)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        label = feat.GetField(name_field) if name_field else None
        raw.append((feat.GetFID(), v, None if label is None or not str(label).strip() else str(label).strip()))
        if color_field and feat.GetField(color_field):
            colors[raw[-1][1]] = str(feat.GetField(color_field))
    if not raw:
        raise BdgfError(f"the class field {class_field!r} of {p.name} is empty; fill it with class codes or names")
    numeric = all(_whole(v) is not None for _, v, _ in raw)  # whole numbers, of any field type
    values = []
    if numeric:
        known_names = {c.code: c.name for c in known or []}
        named: dict[int, str] = {}
        for fid, v, label in raw:
            code = _whole(v)
            if label is not None and named.setdefault(code, label) != label:
                raise BdgfError(f"the class code {code} has two names in {p.name}, {named[code]!r} and {label!r}; "
                                f"give each code one name in the field {name_field!r}")
            values.append((fid, code))
        names = {c: named.get(c, known_names.get(c, f"class {c}")) for _, c in values}
        colors = {_whole(v): col for v, col in colors.items()}
    else:
        codes = {c.name: c.code for c in known or []}
        top = max(codes.values(), default=0)
        for i, lab in enumerate(sorted({str(v).strip() for _, v, _ in raw} - set(codes))):
            codes[lab] = top + i + 1
        values = [(fid, codes[str(v).strip()]) for fid, v, _ in raw]
        names = {codes[str(v).strip()]: str(v).strip() for _, v, _ in raw}
        colors = {codes[str(v).strip()]: col for v, col in colors.items()}
    order = sorted(names)
    index = {c: i + 1 for i, c in enumerate(order)}  # burnt instead of the code: a code may be 0

    # An in-memory copy with two integer fields to burn (class indices and region ids).
    mem = ogr.GetDriverByName("Memory").CreateDataSource("gt")
    srs = lyr.GetSpatialRef()
    mlyr = mem.CreateLayer("gt", srs=srs, geom_type=ogr.wkbMultiPolygon)
    mlyr.CreateField(ogr.FieldDefn("idx", ogr.OFTInteger))
    mlyr.CreateField(ogr.FieldDefn("rid", ogr.OFTInteger))
    by_fid = dict(values)
    lyr.ResetReading()
    rid = 0
    for feat in lyr:
        if feat.GetFID() not in by_fid or feat.GetGeometryRef() is None:
            continue
        rid += 1
        out = ogr.Feature(mlyr.GetLayerDefn())
        out.SetGeometry(feat.GetGeometryRef().Clone())
        out.SetField("idx", index[by_fid[feat.GetFID()]])
        out.SetField("rid", rid)
        mlyr.CreateFeature(out)

    burnt = _burn(mlyr, grid, "idx")
    regions = _burn(mlyr, grid, "rid")
    if not (burnt > 0).any():
        raise BdgfError(f"no polygon of {p.name} covers a pixel of the raster; check that the polygons "
                        "and the raster cover the same area and CRS")
    none = _unlabelled_for(order)
    labels = np.concatenate([[none], np.asarray(order, np.int64)]).astype(np.int32)[burnt]
    known_colors = {c.code: c.color for c in known or []}
    classes = [ClassInfo(c, names[c], colors.get(c, known_colors.get(c, PALETTE[(c - 1) % len(PALETTE)])))
               for c in order]
    return GroundTruth(labels, regions, classes, str(p), none)


def _unlabelled_for(codes) -> int:
    """0 while every code is positive (as ever), else a value no code can take."""
    return 0 if min(codes) > 0 else UNLABELLED


def _burn(layer, grid: Grid, attribute: str) -> np.ndarray:
    drv = gdal.GetDriverByName("MEM")
    ds = drv.Create("", grid.width, grid.height, 1, gdal.GDT_Int32)
    ds.SetGeoTransform(grid.geotransform)
    if grid.crs_wkt:
        ds.SetProjection(grid.crs_wkt)
    # The rasteriser reprojects the polygons when their CRS differs from the grid's.
    gdal.RasterizeLayer(ds, [1], layer, options=[f"ATTRIBUTE={attribute}"])
    return ds.GetRasterBand(1).ReadAsArray().astype(np.int32)


def _from_label_raster(p: Path, grid: Grid, known: list[ClassInfo] | None = None,
                       unlabelled_value: float | None = None) -> GroundTruth:
    from scipy import ndimage

    src = RasterSource(p, grid, what="label raster", resampling="near")
    a = src.read()[0]
    # nodata is NaN here (RasterSource): never a class; without nodata, 0 is "unlabelled" by default
    off = 0.0 if unlabelled_value is None and src.nodata[0] is None else unlabelled_value
    empty = ~np.isfinite(a) | ((a == np.float32(off)) if off is not None else False)
    a = np.where(empty, 0, a)
    if (a != np.round(a)).any():
        raise BdgfError(f"the label raster {p.name} holds fractional values; a label raster holds whole class codes "
                        "(1, 2, 3...; 0 = unlabelled). Did you give an image instead of the labels?")
    codes = np.unique(a[~empty])
    none = _unlabelled_for(codes) if codes.size else 0
    labels = np.where(empty, none, a).astype(np.int32)
    said = f"{off:g}" if off is not None else f"nodata ({src.nodata[0]:g})"
    if empty.all():
        raise BdgfError(f"the label raster {p.name} has no labelled pixel (all {said} or nodata); give a label raster "
                        "with class codes, or the right unlabelled value")
    codes = np.unique(labels[~empty])
    if codes.size > MAX_CLASSES:
        raise BdgfError(f"the label raster {p.name} has {codes.size} distinct values; a label raster holds at most "
                        f"{MAX_CLASSES} class codes. Did you give an image instead of the labels?")
    regions = np.zeros_like(labels)
    offset = 0
    eight = np.ones((3, 3), bool)  # diagonal neighbours belong to the same region
    for code in codes:
        comp, n = ndimage.label(labels == code, structure=eight)
        regions[comp > 0] = comp[comp > 0] + offset
        offset += n
    names, colors = raster_categories(p)
    for c in known or []:
        names.setdefault(c.code, c.name)
        colors.setdefault(c.code, c.color)
    classes = [ClassInfo(int(c), names.get(int(c), f"class {int(c)}"),
                         colors.get(int(c), PALETTE[(int(c) - 1) % len(PALETTE)])) for c in codes]
    return GroundTruth(labels, regions, classes, str(p), none)


def known_classes(p: str | os.PathLike) -> list[ClassInfo]:
    """The classes a class map or label raster names in its categories (``classify`` writes them)."""
    names, colors = raster_categories(p)
    return [ClassInfo(c, n, colors.get(c, PALETTE[(c - 1) % len(PALETTE)])) for c, n in sorted(names.items())]


def raster_categories(p: str | os.PathLike) -> tuple[dict[int, str], dict[int, str]]:
    """Class names and colours a label raster or class map carries (category names, colour table)."""
    from .raster import pam_off

    with pam_off(Path(p)):  # a sidecar the user has (where GDAL keeps categories) is still read
        ds = gdal.Open(str(p))
    band = ds.GetRasterBand(1)  # ds stays referenced while its band is used
    band.GetMetadata()  # GDAL 3.6's GeoTIFF driver reads the .aux.xml categories only after a metadata call
    names = {i: n.strip() for i, n in enumerate(band.GetCategoryNames() or []) if n and n.strip()}
    colors = {}
    table = band.GetRasterColorTable()
    if table is not None:
        for i in names:
            if i < table.GetCount():
                r, g, b = table.GetColorEntry(i)[:3]
                colors[i] = f"#{r:02x}{g:02x}{b:02x}"
    return names, colors
