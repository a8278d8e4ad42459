"""Ground truth: labelled polygons (any OGR source) or a label raster, rasterised onto a grid.

The result holds, per pixel, the class code (0 = unlabelled) and the id of the region it came
from (the polygon, or the connected labelled region of a label raster, 8-connected), which the
spatial splits use. Class names and colours travel with the model.

A second ground truth (a fixed test layer, or the ground truth of an assessment) is read with
the classes of the first (``classes=``), so that a class name gets the same code in both.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass
class GroundTruth:
    labels: np.ndarray          # (H, W) int32 class codes, 0 = unlabelled
    regions: np.ndarray         # (H, W) int32 region ids, 0 = none
    classes: list[ClassInfo] = field(default_factory=list)
    source: str = ""

    def counts(self) -> dict[int, int]:
        codes, n = np.unique(self.labels[self.labels > 0], return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, n)}


MAX_CLASSES = 255  # label rasters with more distinct codes are most likely not label rasters


def load_ground_truth(path: str | os.PathLike, grid: Grid, class_field: str = "class",
                      layer: str | None = None, classes: list[ClassInfo] | None = None) -> GroundTruth:
    """Read polygons (rasterised onto ``grid``) or a label raster (aligned to it).

    ``classes``: the classes already known (of the training layer, or of a model). A text class
    field then maps each known name to its known code (new names get new codes after them), and
    numeric codes without a name field take the known names.
    """
    p = Path(path)
    if not p.exists():
        raise BdgfError(f"the ground truth {p} does not exist; check the path")
    vec = _try_open_vector(p)
    if vec is not None:
        return _from_polygons(vec, p, grid, class_field, layer, classes)
    return _from_label_raster(p, grid, classes)


def merge_fixed(train: GroundTruth, test: GroundTruth) -> GroundTruth:
    """One ground truth holding a training layer and a separate test layer (codes already agreed).

    Labels: the training layer's, and the test layer's where the training layer has none and
    the test class is a training class. Regions: the test layer's ids follow the training ones.
    The split (:func:`bdgf_core.sampling.split_fixed`) says which pixel is on which side.
    """
    known = np.array(sorted(c.code for c in train.classes), np.int32)
    use_test = (train.labels == 0) & (test.labels > 0) & np.isin(test.labels, known)
    labels = np.where(use_test, test.labels, train.labels).astype(np.int32)
    offset = int(train.regions.max(initial=0))
    regions = np.where(use_test, test.regions + offset, train.regions).astype(np.int32)
    return GroundTruth(labels, regions, list(train.classes), f"{train.source} + {test.source}")


def _try_open_vector(p: Path):
    try:
        ds = gdal.OpenEx(str(p), gdal.OF_VECTOR | gdal.OF_READONLY)
    except RuntimeError:
        return None
    if ds is None or ds.GetLayerCount() == 0:
        return None
    return ds


def _from_polygons(ds, p: Path, grid: Grid, class_field: str, layer_name: str | None,
                   known: list[ClassInfo] | None = None) -> GroundTruth:
    lyr = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if lyr is None:
        raise BdgfError(f"{p.name} has no layer {layer_name!r}; name one of its layers")
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if class_field not in fields:
        raise BdgfError(f"the class field {class_field!r} is not in {p.name} (fields: {', '.join(fields) or 'none'}); "
                        "choose the field that holds the class codes or names")
    ftype = defn.GetFieldDefn(fields.index(class_field)).GetType()
    numeric = ftype in (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)
    name_field = "name" if "name" in fields and class_field != "name" else None
    color_field = next((f for f in ("color", "colour") if f in fields), None)

    known_names = {c.code: c.name for c in known or []}
    # Read attributes once: the rasteriser burns a per-feature code and a region id.
    values, names, colors, fids = [], {}, {}, []
    lyr.ResetReading()
    for feat in lyr:
        v = feat.GetField(class_field)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if numeric:
            code = int(round(float(v)))
            if code <= 0:
                continue  # 0 and negatives mean "unlabelled" in label rasters too
            label = str(feat.GetField(name_field)) if name_field else known_names.get(code, f"class {code}")
        else:
            label = str(v).strip()
            code = None
        values.append((feat.GetFID(), code, label))
        if color_field and feat.GetField(color_field):
            colors[label] = str(feat.GetField(color_field))
    if not values:
        raise BdgfError(f"the class field {class_field!r} of {p.name} is empty; fill it with class codes or names")
    if not numeric:
        names = {c.name: c.code for c in known or []}
        top = max(names.values(), default=0)
        for i, lab in enumerate(sorted({v[2] for v in values} - set(names))):
            names[lab] = top + i + 1
        values = [(fid, names[lab], lab) for fid, _, lab in values]

    # An in-memory copy with two integer fields to burn (codes and region ids).
    mem = ogr.GetDriverByName("Memory").CreateDataSource("gt")
    srs = lyr.GetSpatialRef()
    mlyr = mem.CreateLayer("gt", srs=srs, geom_type=ogr.wkbMultiPolygon)
    mlyr.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    mlyr.CreateField(ogr.FieldDefn("rid", ogr.OFTInteger))
    by_fid = {fid: (code, lab) for fid, code, lab in values}
    lyr.ResetReading()
    rid = 0
    for feat in lyr:
        if feat.GetFID() not in by_fid or feat.GetGeometryRef() is None:
            continue
        rid += 1
        out = ogr.Feature(mlyr.GetLayerDefn())
        out.SetGeometry(feat.GetGeometryRef().Clone())
        out.SetField("code", by_fid[feat.GetFID()][0])
        out.SetField("rid", rid)
        mlyr.CreateFeature(out)

    labels = _burn(mlyr, grid, "code")
    regions = _burn(mlyr, grid, "rid")
    if not (labels > 0).any():
        raise BdgfError(f"no polygon of {p.name} covers a pixel of the raster; check that the polygons "
                        "and the raster cover the same area and CRS")
    seen = {}
    for _, code, lab in values:
        seen.setdefault(code, lab)
    known_colors = {c.code: c.color for c in known or []}
    classes = [ClassInfo(c, seen[c], colors.get(seen[c], known_colors.get(c, PALETTE[(c - 1) % len(PALETTE)])))
               for c in sorted(seen)]
    return GroundTruth(labels, regions, classes, str(p))


def _burn(layer, grid: Grid, attribute: str) -> np.ndarray:
    drv = gdal.GetDriverByName("MEM")
    ds = drv.Create("", grid.width, grid.height, 1, gdal.GDT_Int32)
    ds.SetGeoTransform(grid.geotransform)
    if grid.crs_wkt:
        ds.SetProjection(grid.crs_wkt)
    # The rasteriser reprojects the polygons when their CRS differs from the grid's.
    gdal.RasterizeLayer(ds, [1], layer, options=[f"ATTRIBUTE={attribute}"])
    return ds.GetRasterBand(1).ReadAsArray().astype(np.int32)


def _from_label_raster(p: Path, grid: Grid, known: list[ClassInfo] | None = None) -> GroundTruth:
    from scipy import ndimage

    src = RasterSource(p, grid, what="label raster", resampling="near")
    a = src.read()[0]
    a = np.where(np.isfinite(a), a, 0)
    if (a != np.round(a)).any():
        raise BdgfError(f"the label raster {p.name} holds fractional values; a label raster holds whole class codes "
                        "(1, 2, 3...; 0 = unlabelled). Did you give an image instead of the labels?")
    labels = a.astype(np.int32)
    labels[labels < 0] = 0
    if not (labels > 0).any():
        raise BdgfError(f"the label raster {p.name} has no labelled pixel (all 0 or nodata); give a label raster "
                        "with class codes > 0")
    codes = np.unique(labels[labels > 0])
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
    return GroundTruth(labels, regions, classes, str(p))


def known_classes(p: str | os.PathLike) -> list[ClassInfo]:
    """The classes a class map or label raster names in its categories (``classify`` writes them)."""
    names, colors = raster_categories(p)
    return [ClassInfo(c, n, colors.get(c, PALETTE[(c - 1) % len(PALETTE)])) for c, n in sorted(names.items())]


def raster_categories(p: str | os.PathLike) -> tuple[dict[int, str], dict[int, str]]:
    """Class names and colours a label raster or class map carries (category names, colour table)."""
    ds = gdal.Open(str(p))
    band = ds.GetRasterBand(1)  # ds stays referenced while its band is used
    band.GetMetadata()  # GDAL 3.6's GeoTIFF driver reads the .aux.xml categories only after a metadata call
    names = {i: n.strip() for i, n in enumerate(band.GetCategoryNames() or []) if i > 0 and n and n.strip()}
    colors = {}
    table = band.GetRasterColorTable()
    if table is not None:
        for i in names:
            if i < table.GetCount():
                r, g, b = table.GetColorEntry(i)[:3]
                colors[i] = f"#{r:02x}{g:02x}{b:02x}"
    return names, colors
