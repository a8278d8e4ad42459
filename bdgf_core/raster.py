"""Rasters: open with clear errors, check grids, align an auxiliary raster onto the spectral grid,
read windows as float32 with nodata as NaN, and write GeoTIFFs block by block, atomically."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from osgeo import gdal, osr

from .atomic import atomic_output
from .errors import BdgfError

gdal.UseExceptions()
osr.UseExceptions()


@dataclass(frozen=True)
class Grid:
    """A pixel grid: size, geotransform and CRS (WKT, may be empty)."""

    width: int
    height: int
    geotransform: tuple[float, ...]
    crs_wkt: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) for a north-up grid."""
        x0, dx, _, y0, _, dy = self.geotransform
        xs = (x0, x0 + dx * self.width)
        ys = (y0, y0 + dy * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        if (self.width, self.height) != (other.width, other.height):
            return False
        px = abs(self.geotransform[1]) or 1.0
        if not np.allclose(self.geotransform, other.geotransform, atol=tol * px, rtol=0):
            return False
        return same_crs(self.crs_wkt, other.crs_wkt)

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height,
                "geotransform": list(self.geotransform), "crs_wkt": self.crs_wkt}


def same_crs(a: str, b: str) -> bool:
    if not a or not b:
        return not a and not b
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    sa.ImportFromWkt(a)
    sb.ImportFromWkt(b)
    return bool(sa.IsSame(sb))


def open_raster(path: str | os.PathLike, what: str = "raster") -> gdal.Dataset:
    """Open a raster read-only or fail with a message that names the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise BdgfError(f"the {what} {p} does not exist; check the path")
    try:
        ds = gdal.Open(str(p), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise BdgfError(f"the {what} {p.name} cannot be read as a raster ({exc}); give a GeoTIFF or "
                        "another GDAL raster") from None
    if ds is None or ds.RasterCount == 0:
        raise BdgfError(f"the {what} {p.name} has no raster bands; give a raster file")
    return ds


def grid_of(ds: gdal.Dataset) -> Grid:
    return Grid(ds.RasterXSize, ds.RasterYSize, tuple(ds.GetGeoTransform()), ds.GetProjection() or "")


def nodata_values(ds: gdal.Dataset) -> list[float | None]:
    return [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)]


class RasterSource:
    """A raster readable in windows of the reference grid, as float32 with nodata as NaN.

    When the raster lies on another grid it is warped (bilinear, or nearest for labels) onto
    the reference grid through a GDAL virtual raster, so reading stays block by block.
    """

    def __init__(self, path: str | os.PathLike, reference: Grid | None = None, what: str = "raster",
                 resampling: str = "bilinear", log=None) -> None:
        self.path = Path(path)
        self.what = what
        ds = open_raster(path, what)
        own = grid_of(ds)
        self.nodata = nodata_values(ds)
        self.bands = ds.RasterCount
        self.resampled = False
        if reference is None or own.same_as(reference):
            self.grid = own if reference is None else reference
            self.ds = ds
        else:
            self.ds = _warp_onto(ds, own, reference, what, self.path.name, resampling)
            self.grid = reference
            self.resampled = True
            if log is not None:
                log(f"the {what} {self.path.name} is on another grid ({own.width}x{own.height}); "
                    f"resampled ({resampling}) onto the spectral grid ({reference.width}x{reference.height})")
        self.dtype = gdal.GetDataTypeName(ds.GetRasterBand(1).DataType)
        self._keep = ds  # the warped VRT reads from it

    def close(self) -> None:
        """Release the datasets, the warped view before the raster it reads (GDAL needs that order)."""
        self.ds = None
        self._keep = None

    def __del__(self) -> None:
        self.close()

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    def read(self, row0: int = 0, row1: int | None = None, col0: int = 0, col1: int | None = None,
             bands: Sequence[int] | None = None) -> np.ndarray:
        """(C, h, w) float32; nodata and non-finite values become NaN."""
        row1 = self.height if row1 is None else row1
        col1 = self.width if col1 is None else col1
        idx = list(bands) if bands is not None else list(range(self.bands))
        out = np.empty((len(idx), row1 - row0, col1 - col0), np.float32)
        for k, b in enumerate(idx):
            band = self.ds.GetRasterBand(b + 1)
            a = band.ReadAsArray(col0, row0, col1 - col0, row1 - row0)
            a = a.astype(np.float32, copy=False)
            nd = self.nodata[b]
            if nd is not None:
                a[a == np.float32(nd)] = np.nan
            out[k] = a
        out[~np.isfinite(out)] = np.nan
        return out


def _warp_onto(ds: gdal.Dataset, own: Grid, ref: Grid, what: str, name: str, resampling: str) -> gdal.Dataset:
    if bool(own.crs_wkt) != bool(ref.crs_wkt):
        if (own.width, own.height) == (ref.width, ref.height):
            # One side has no CRS but the sizes match: the usual case of arrays exported without
            # georeferencing; treat them as the same grid rather than refuse.
            return ds
        raise BdgfError(f"the {what} {name} and the spectral raster cannot be reconciled: one has no CRS "
                        "and their sizes differ; assign a CRS to both (Raster > Projections > Assign)")
    src_bounds = _bounds_in(own, ref.crs_wkt, what, name) if own.crs_wkt else own.bounds
    rb = ref.bounds
    if src_bounds[0] >= rb[2] or src_bounds[2] <= rb[0] or src_bounds[1] >= rb[3] or src_bounds[3] <= rb[1]:
        raise BdgfError(f"the {what} {name} does not overlap the spectral raster; give rasters of the same area")
    opts = gdal.WarpOptions(format="VRT", outputBounds=rb, width=ref.width, height=ref.height,
                            dstSRS=ref.crs_wkt or None, resampleAlg=resampling,
                            srcNodata=None, dstNodata=np.nan if resampling != "near" else None,
                            outputType=gdal.GDT_Float32 if resampling != "near" else gdal.GDT_Unknown)
    try:
        return gdal.Warp("", ds, options=opts)
    except RuntimeError as exc:
        raise BdgfError(f"cannot resample the {what} {name} onto the spectral grid ({exc}); "
                        "reproject it to the spectral raster's CRS first") from None


def _bounds_in(grid: Grid, dst_wkt: str, what: str = "raster", name: str = "") -> tuple[float, float, float, float]:
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(grid.crs_wkt)
    dst.ImportFromWkt(dst_wkt)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        ct = osr.CoordinateTransformation(src, dst)
        xmin, ymin, xmax, ymax = grid.bounds
        return tuple(ct.TransformBounds(xmin, ymin, xmax, ymax, 21))  # type: ignore[return-value]
    except RuntimeError:
        raise BdgfError(f"the CRS of the {what} {name} ({src.GetName() or 'unnamed'}) cannot be transformed to the "
                        f"spectral raster's ({dst.GetName() or 'unnamed'}); reproject it to the spectral raster's "
                        "CRS (Raster > Projections > Warp)") from None


@contextlib.contextmanager
def gdal_cache_cap(max_bytes: int):
    """Cap GDAL's block cache (default: 5% of the RAM) for the work inside; restore it after.

    Lowering the cap makes GDAL drop cached blocks down to it, so what was read inside does not stay
    resident after."""
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(int(min(before, max_bytes)))
    try:
        yield
    finally:
        gdal.SetCacheMax(before)


def any_pixel_with_data(sources: Sequence[RasterSource], budget_mb: float = 2) -> bool:
    """True when some pixel has data in every band of every source (all on one grid).

    Reads strips of rows within ``budget_mb`` and stops at the first such pixel, so an ordinary
    raster costs one strip; only rasters without data are read to the end. The strip is small by
    default: this check runs before a run's memory budget is planned, so it must not set the peak.
    """
    grid = sources[0].grid
    bytes_per_row = max(1, grid.width * sum(s.bands for s in sources) * 4)
    rows = max(1, min(grid.height, int(budget_mb * 2**20 // bytes_per_row)))
    # GDAL's cache is capped too: uncapped, the source blocks behind a strip stayed cached (15 MB
    # for a strip of 2 MB of a VRT mosaic, measured), ahead of the run's own budget
    with gdal_cache_cap(int(budget_mb * 2**20)):
        for r0 in range(0, grid.height, rows):
            r1 = min(grid.height, r0 + rows)
            ok = np.ones((r1 - r0, grid.width), bool)
            for s in sources:
                ok &= np.isfinite(s.read(r0, r1)).all(0)
            if ok.any():
                return True
    return False


# ---------------------------------------------------------------------------------------------
# Writing

def smallest_int_type(max_value: int) -> int:
    return gdal.GDT_Byte if max_value <= 255 else gdal.GDT_UInt16 if max_value <= 65535 else gdal.GDT_Int32


class RasterWriter:
    """A tiled, compressed GeoTIFF on a grid, written block by block to a partial file."""

    def __init__(self, path: Path, grid: Grid, bands: int, data_type: int, nodata: float | None,
                 band_names: Sequence[str] | None = None) -> None:
        drv = gdal.GetDriverByName("GTiff")
        opts = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
        if data_type in (gdal.GDT_Float32, gdal.GDT_Float64):
            opts.append("PREDICTOR=3")
        self.ds = drv.Create(str(path), grid.width, grid.height, bands, data_type, options=opts)
        self.ds.SetGeoTransform(grid.geotransform)
        if grid.crs_wkt:
            self.ds.SetProjection(grid.crs_wkt)
        for i in range(bands):
            band = self.ds.GetRasterBand(i + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if band_names is not None:
                band.SetDescription(band_names[i])

    def write(self, row0: int, col0: int, block: np.ndarray) -> None:
        """Write a (C, h, w) or (h, w) block at (row0, col0)."""
        if block.ndim == 2:
            block = block[None]
        for i in range(block.shape[0]):
            self.ds.GetRasterBand(i + 1).WriteArray(block[i], col0, row0)

    def set_categories(self, codes: Sequence[int], names: Sequence[str], colors: Sequence[str]) -> None:
        """Embed a colour table and category names so QGIS shows the legend at once."""
        band = self.ds.GetRasterBand(1)
        ct = gdal.ColorTable()
        top = max(codes) if codes else 0
        cats = [""] * (top + 1)
        for c, n, col in zip(codes, names, colors):
            ct.SetColorEntry(int(c), hex_to_rgba(col))
            cats[int(c)] = n
        band.SetRasterColorTable(ct)
        band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        band.SetCategoryNames(cats)

    def close(self) -> None:
        if self.ds is not None:
            self.ds.FlushCache()
            self.ds = None


@contextlib.contextmanager
def create_raster(dest: str | os.PathLike, grid: Grid, bands: int, data_type: int, nodata: float | None,
                  band_names: Sequence[str] | None = None) -> Iterator[RasterWriter]:
    """Create ``dest`` atomically: a partial file until the block closes without error."""
    size = grid.width * grid.height * bands * gdal.GetDataTypeSize(data_type) // 8  # uncompressed: at most
    with atomic_output(dest, size_hint=size) as tmp:
        w = RasterWriter(tmp, grid, bands, data_type, nodata, band_names)
        try:
            yield w
        finally:
            w.close()


def write_array(dest: str | os.PathLike, array: np.ndarray, grid: Grid, nodata: float | None = None,
                data_type: int | None = None, band_names: Sequence[str] | None = None) -> Path:
    """Write a whole (C, H, W) or (H, W) array as a GeoTIFF on ``grid`` (atomically)."""
    a = array[None] if array.ndim == 2 else array
    if data_type is None:
        data_type = gdal.GDT_Float32 if a.dtype.kind == "f" else smallest_int_type(int(a.max(initial=0)))
    with create_raster(dest, grid, a.shape[0], data_type, nodata, band_names) as w:
        w.write(0, 0, a)
    return Path(dest)


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255
