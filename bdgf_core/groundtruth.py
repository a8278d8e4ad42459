"""Ground truth: labelled polygons (any OGR source) or a label raster, rasterised onto a grid.

The result holds, per pixel, the class code (0 = unlabelled) and the id of the region it came
from (the polygon, or the connected labelled region of a label raster), which the spatial splits
use. Class names and colours travel with the model.
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


def load_ground_truth(path: str | os.PathLike, grid: Grid, class_field: str = "class",
                      layer: str | None = None) -> GroundTruth:
    """Read polygons (rasterised onto ``grid``) or a label raster (aligned to it)."""
    p = Path(path)
    if not p.exists():
        raise BdgfError(f"the ground truth {p} does not exist; check the path")
    vec = _try_open_vector(p)
    if vec is not None:
        return _from_polygons(vec, p, grid, class_field, layer)
    return _from_label_raster(p, grid)


def _try_open_vector(p: Path):
    try:
        ds = gdal.OpenEx(str(p), gdal.OF_VECTOR | gdal.OF_READONLY)
    except RuntimeError:
        return None
    if ds is None or ds.GetLayerCount() == 0:
        return None
    return ds


def _from_polygons(ds, p: Path, grid: Grid, class_field: str, layer_name: str | None) -> GroundTruth:
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
            label = str(feat.GetField(name_field)) if name_field else f"class {code}"
        else:
            label = str(v).strip()
            code = None
        values.append((feat.GetFID(), code, label))
        if color_field and feat.GetField(color_field):
            colors[label] = str(feat.GetField(color_field))
    if not values:
        raise BdgfError(f"the class field {class_field!r} of {p.name} is empty; fill it with class codes or names")
    if not numeric:
        for i, lab in enumerate(sorted({v[2] for v in values})):
            names[lab] = i + 1
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
    classes = [ClassInfo(c, seen[c], colors.get(seen[c], PALETTE[(c - 1) % len(PALETTE)]))
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


def _from_label_raster(p: Path, grid: Grid) -> GroundTruth:
    from scipy import ndimage

    src = RasterSource(p, grid, what="label raster", resampling="near")
    a = src.read()[0]
    labels = np.where(np.isfinite(a), a, 0).astype(np.int32)
    labels[labels < 0] = 0
    if not (labels > 0).any():
        raise BdgfError(f"the label raster {p.name} has no labelled pixel (all 0 or nodata); give a label raster "
                        "with class codes > 0")
    regions = np.zeros_like(labels)
    offset = 0
    for code in np.unique(labels[labels > 0]):
        comp, n = ndimage.label(labels == code)
        regions[comp > 0] = comp[comp > 0] + offset
        offset += n
    classes = [ClassInfo(int(c), f"class {int(c)}", PALETTE[(int(c) - 1) % len(PALETTE)])
               for c in np.unique(labels[labels > 0])]
    return GroundTruth(labels, regions, classes, str(p))
