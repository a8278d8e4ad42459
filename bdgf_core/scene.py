"""The embedded default scene: a synthetic spectral + SAR pair with labelled polygons.

Irregular, spatially coherent regions (a Voronoi partition of warped coordinates) carry one of
seven land-cover classes. Spectra come from smooth class signatures with additive Gaussian noise
(eq. 6) and a smooth brightness field; the SAR is backscatter times multiplicative gamma speckle
with mean 1 and variance 1/L (eq. 5). Two pairs of classes share their spectral signature and
differ only in SAR backscatter, so a model that ignores the SAR cannot separate them.

Beside the inputs the generator writes ``reference.tif``: every pixel's true class (the scene's own
truth, with class names and colours), for scoring whole maps, boundaries included
(``bdgf_core.mapscore``); the ground-truth polygons stop short of class borders, as surveys do.

``variant="hard"``: single-look SAR, only about 2 dB between the SAR-only classes, stronger
brightness drift within classes, and two more classes with close spectra.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr
from scipy import ndimage

from .atomic import atomic_output
from .errors import BdgfError
from .raster import Grid, create_raster, write_array

EPSG = 32632                   # UTM zone 32N: a real projected CRS
ORIGIN = (650000.0, 5100000.0)
PIXEL = 10.0

# name, spectral signature, (VV, VH) backscatter in dB, colour
CLASSES = [
    ("water", "water", (-22.0, -28.0), "#1f78b4"),
    ("forest", "forest", (-7.0, -12.0), "#33a02c"),
    ("meadow", "grass", (-13.0, -19.0), "#b2df8a"),
    ("flooded vegetation", "grass", (-4.0, -11.0), "#a6cee3"),   # same spectrum as meadow
    ("bare soil", "soil", (-11.0, -18.0), "#cab2d6"),
    ("built-up", "urban", (0.0, -6.0), "#e31a1c"),
    ("paved surface", "urban", (-17.0, -24.0), "#969696"),       # same spectrum as built-up
]
SAR_ONLY_PAIRS = [(3, 4), (6, 7)]


@dataclass
class Scene:
    spectral: Path
    sar: Path
    groundtruth: Path
    class_field: str = "class"
    reference: Path | None = None   # every pixel's class (reference.tif)


def _signature(kind: str, wl: np.ndarray) -> np.ndarray:
    """Reflectance (0..1) of a smooth class signature at wavelengths ``wl`` (nm)."""
    def bump(c, w):
        return np.exp(-0.5 * ((wl - c) / w) ** 2)

    def edge(c, w):
        return 1.0 / (1.0 + np.exp(-(wl - c) / w))

    water_abs = 1 - 0.6 * bump(1450, 80) - 0.7 * bump(1940, 100)
    if kind == "water":
        return 0.06 * np.exp(-(wl - 400) / 250) + 0.01
    if kind in ("forest", "grass", "crop"):
        green = 0.04 * bump(550, 35)
        nir = {"forest": 0.38, "grass": 0.48, "crop": 0.44}[kind]
        base = 0.03 + green + nir * edge(715, 18) * water_abs * (1 - 0.25 * edge(1300, 200))
        return base * (0.85 if kind == "forest" else 1.0)
    if kind == "soil":
        return (0.08 + 0.28 * (wl - 400) / 2100 + 0.05 * bump(900, 200)) * (1 - 0.3 * (1 - water_abs))
    if kind == "urban":
        return 0.18 + 0.06 * np.sin(wl / 300.0) + 0.04 * (wl - 400) / 2100
    raise ValueError(kind)


def generate_scene(out_dir: str | os.PathLike, size: int = 200, bands: int = 60, seed: int = 0,
                   variant: str = "standard", sar_bands: int = 2) -> Scene:
    """Write spectral.tif, sar.tif, groundtruth.gpkg and reference.tif into ``out_dir``; return their paths."""
    if size < 16:
        raise BdgfError(f"the scene size must be at least 16 pixels, got {size}")
    if bands < 2:
        raise BdgfError(f"the scene needs at least 2 spectral bands, got {bands}")
    if variant not in ("standard", "hard"):
        raise BdgfError(f"unknown scene variant {variant!r}; use standard or hard")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hard = variant == "hard"
    h = w = size

    # Regions: Voronoi cells of warped coordinates give irregular but coherent shapes.
    n_regions = max(14, int(round(45 * (size / 200) ** 2)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = size / 12
    for grid_ in (yy, xx):
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), size / 10)
        grid_ += field / (np.abs(field).max() + 1e-9) * warp
    seeds = rng.uniform(0, size, (n_regions, 2)).astype(np.float32)
    d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    region = d.argmin(0).astype(np.int32)
    n_cls = len(CLASSES)
    region_class = np.concatenate([np.arange(n_cls), rng.integers(0, n_cls, n_regions - n_cls)])
    region_class = rng.permutation(region_class) + 1  # every class gets at least one region
    # make sure each class has at least two regions where possible, for spatial splits
    for c in range(1, n_cls + 1):
        if (region_class == c).sum() < 2 and n_regions >= 2 * n_cls:
            donors = [r for r in range(n_regions) if (region_class == region_class[r]).sum() > 2]
            region_class[donors[0]] = c
    classes = region_class[region]

    # Spectral cube: signature * smooth brightness field + Gaussian noise (eq. 6).
    wl = np.linspace(400, 2500, bands)
    sig = {k: _signature(k, wl) for k in ("water", "forest", "grass", "crop", "soil", "urban")}
    kinds = [c[1] for c in CLASSES]
    if hard:
        kinds[4] = "crop"  # bare soil -> a crop whose spectrum is close to meadow's
    table = np.stack([sig[k] for k in kinds]).astype(np.float32)          # (classes, bands)
    drift = 0.15 if hard else 0.05
    bright = 1 + drift * _smooth(rng, (h, w), size / 8)
    spectral = table[classes - 1].transpose(2, 0, 1) * bright[None]
    spectral += rng.normal(0, 0.01, spectral.shape).astype(np.float32)   # eq. 6: additive Gaussian
    spectral = np.clip(spectral, 0, 1).astype(np.float32)

    # SAR: backscatter * texture * gamma speckle with mean 1, variance 1/L (eq. 5).
    looks = 1 if hard else 4
    db = np.array([c[2] for c in CLASSES], np.float32)[:, :sar_bands] if sar_bands <= 2 else None
    if db is None:
        raise BdgfError("the generator makes 1 or 2 SAR bands")
    if hard:
        for a, b in SAR_ONLY_PAIRS:  # only about 2 dB between the SAR-only classes
            db[b - 1] = db[a - 1] + 2.0
    sigma0 = 10 ** (db / 10)
    texture = np.exp(0.15 * _smooth(rng, (h, w), size / 20))
    sar = sigma0[classes - 1].transpose(2, 0, 1) * texture[None]
    sar *= rng.gamma(looks, 1.0 / looks, sar.shape)                      # eq. 5: speckle, mean 1
    sar = sar.astype(np.float32)

    grid = Grid(w, h, (ORIGIN[0], PIXEL, 0.0, ORIGIN[1], 0.0, -PIXEL), _wkt(EPSG))
    sp = write_array(out / "spectral.tif", spectral, grid, band_names=[f"{x:.0f} nm" for x in wl])
    sa = write_array(out / "sar.tif", sar, grid, band_names=["VV", "VH"][:sar_bands])

    # Ground truth: regions shrunk by 2 pixels (boundaries stay unlabelled, as in real surveys),
    # a few regions left unlabelled, then polygonised.
    labelled = np.zeros_like(region)
    keep = rng.random(n_regions) > 0.15
    for r in range(n_regions):
        if not keep[r] and (region_class[keep] == region_class[r]).sum() >= 2:
            continue
        m = ndimage.binary_erosion(region == r, iterations=2)
        labelled[m] = r + 1
    gt = _polygonise(out / "groundtruth.gpkg", labelled, region_class, grid)
    ref = write_reference(out / "reference.tif", classes, grid)
    return Scene(sp, sa, gt, reference=ref)


def write_reference(dest: Path, classes: np.ndarray, grid: Grid) -> Path:
    """The full reference map: every pixel's class code, with the class names and colours."""
    with create_raster(dest, grid, 1, gdal.GDT_Byte, 0) as w:
        w.write(0, 0, classes.astype(np.uint8))
        w.set_categories(list(range(1, len(CLASSES) + 1)), [c[0] for c in CLASSES], [c[3] for c in CLASSES])
    return dest


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f / (np.abs(f).max() + 1e-9)).astype(np.float32)


def _wkt(epsg: int) -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    return s.ExportToWkt()


def _polygonise(dest: Path, regions: np.ndarray, region_class: np.ndarray, grid: Grid) -> Path:
    mem = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(grid.geotransform)
    mem.SetProjection(grid.crs_wkt)
    band = mem.GetRasterBand(1)
    band.WriteArray(regions)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(grid.crs_wkt)
    tmp_ds = ogr.GetDriverByName("Memory").CreateDataSource("p")
    tmp = tmp_ds.CreateLayer("p", srs=srs, geom_type=ogr.wkbPolygon)
    tmp.CreateField(ogr.FieldDefn("rid", ogr.OFTInteger))
    gdal.Polygonize(band, band, tmp, 0)  # the band is its own mask: 0 stays empty
    with atomic_output(dest) as part:
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(part))
        lyr = ds.CreateLayer("groundtruth", srs=srs, geom_type=ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
        lyr.CreateField(ogr.FieldDefn("name", ogr.OFTString))
        lyr.CreateField(ogr.FieldDefn("color", ogr.OFTString))
        lyr.StartTransaction()
        for f in tmp:
            code = int(region_class[f.GetField("rid") - 1])
            o = ogr.Feature(lyr.GetLayerDefn())
            o.SetGeometry(f.GetGeometryRef().Clone())
            o.SetField("class", code)
            o.SetField("name", CLASSES[code - 1][0])
            o.SetField("color", CLASSES[code - 1][3])
            lyr.CreateFeature(o)
        lyr.CommitTransaction()
        ds = None
    return dest
