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


@contextlib.contextmanager
def pam_off(path: Path) -> Iterator[None]:
    """Open inputs with GDAL's PAM (.aux.xml sidecars) off in this thread, so nothing is written beside them.

    A sidecar the user already has is read (it may hold georeferencing or category names) with
    PAM on: this runtime never sets metadata nor computes statistics on an input, which is what
    would rewrite it."""
    if Path(str(path) + ".aux.xml").exists():
        yield
        return
    before = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", before)


def open_raster(path: str | os.PathLike, what: str = "raster") -> gdal.Dataset:
    """Open an input raster read-only (PAM off) or fail with a message that names the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise BdgfError(f"the {what} {p} does not exist; check the path")
    try:
        with pam_off(p):
            ds = gdal.Open(str(p), gdal.GA_ReadOnly)
            # GeoTIFF reads its PAM state on the first metadata call, not at open: make that call here,
            # while PAM is off, or a later statistics call would write a sidecar after all
            ds.GetMetadata()
    except RuntimeError as exc:
        raise BdgfError(f"the {what} {p.name} cannot be read as a raster ({exc}); give a GeoTIFF or "
                        "another GDAL raster") from None
    if ds is None or ds.RasterCount == 0:
        raise BdgfError(f"the {what} {p.name} has no raster bands; give a raster file")
    if gdal.DataTypeIsComplex(ds.GetRasterBand(1).DataType):
        raise BdgfError(f"the {what} {p.name} holds complex values ({gdal.GetDataTypeName(ds.GetRasterBand(1).DataType)}); "
                        "take the amplitude first, e.g. gdal_calc.py -A in.tif --calc=\"abs(A)\" --type=Float32 "
                        "--outfile=amp.tif (or the Raster Calculator's abs())")
    return ds


def read_failure(what: str, name: str, row0: int, row1: int, exc: Exception) -> BdgfError:
    """The one message for a raster whose pixels cannot be read (truncated, damaged, a missing source)."""
    detail = " ".join(str(exc).split())
    return BdgfError(f"cannot read rows {row0}-{row1} of the {what} {name} ({detail}); check that the "
                     "file, and any file it refers to, is complete and readable")


def grid_of(ds: gdal.Dataset) -> Grid:
    return Grid(ds.RasterXSize, ds.RasterYSize, tuple(ds.GetGeoTransform()), ds.GetProjection() or "")


def nodata_values(ds: gdal.Dataset) -> list[float | None]:
    return [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(ds.RasterCount)]


SAR_RESAMPLING = ("auto", "bilinear", "average")


class RasterSource:
    """A raster readable in windows of the reference grid, as float32 with nodata as NaN.

    When the raster lies on another grid it is warped onto the reference grid through a GDAL
    virtual raster, so reading stays block by block. ``resampling``: "near" (labels), "bilinear",
    "average" (block averaging; bands in dB are averaged in linear power and given back in dB),
    or "auto" (average when the raster's pixels are finer than the reference grid's, else bilinear).
    """

    def __init__(self, path: str | os.PathLike, reference: Grid | None = None, what: str = "raster",
                 resampling: str = "bilinear", log=None) -> None:
        self.path = Path(path)
        self.what = what
        self._vsimem: list[str] = []
        self._views: list[gdal.Dataset] = []
        ds = open_raster(path, what)
        own = grid_of(ds)
        self.nodata = nodata_values(ds)
        self.bands = ds.RasterCount
        self.resampled = False
        self.resampling = None
        if reference is None or own.same_as(reference):
            self.grid = own if reference is None else reference
            self.ds = ds
        else:
            if resampling == "auto":
                resampling = "average" if _finer(own, reference, what, self.path.name) else "bilinear"
            db = _db_bands(ds, self.nodata, what, self.path.name) if resampling == "average" else [False] * self.bands
            self.ds = _warp_onto(ds, own, reference, what, self.path.name, resampling, db, self)
            self.grid = reference
            self.resampled = True
            self.resampling = resampling
            if log is not None:
                how = resampling + (" in linear power, the dB bands converted there and back" if any(db) else "")
                log(f"the {what} {self.path.name} is on another grid ({own.width}x{own.height}); "
                    f"resampled ({how}) onto the spectral grid ({reference.width}x{reference.height})")
        self.dtype = gdal.GetDataTypeName(ds.GetRasterBand(1).DataType)
        self._keep = ds  # the warped VRT reads from it

    def close(self) -> None:
        """Release the datasets, the warped view before the raster it reads (GDAL needs that order)."""
        self.ds = None
        self._views = []
        self._keep = None
        for f in getattr(self, "_vsimem", []):
            gdal.Unlink(f)
        self._vsimem = []

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
            try:
                a = band.ReadAsArray(col0, row0, col1 - col0, row1 - row0)
            except RuntimeError as exc:
                raise read_failure(self.what, self.path.name, row0, row1, exc) from None
            a = a.astype(np.float32, copy=False)
            nd = self.nodata[b]
            if nd is not None:
                a[a == np.float32(nd)] = np.nan
            out[k] = a
        out[~np.isfinite(out)] = np.nan
        return out


class _StackedDataset:
    """What readers use of a GDAL dataset (band count, sizes, ReadAsArray) over a stack of sources."""

    def __init__(self, stack: "RasterStack") -> None:
        self.stack = stack
        self.RasterCount = stack.bands
        self.RasterXSize, self.RasterYSize = stack.width, stack.height

    def GetRasterBand(self, i: int):  # noqa: N802 - GDAL's name
        part, local = self.stack.band_of(i - 1)
        return part.ds.GetRasterBand(local + 1)

    def ReadAsArray(self, xoff: int = 0, yoff: int = 0, xsize: int | None = None, ysize: int | None = None,  # noqa: N802
                    buf_obj: np.ndarray | None = None) -> np.ndarray:
        xsize = self.RasterXSize if xsize is None else xsize
        ysize = self.RasterYSize if ysize is None else ysize
        out = np.empty((self.RasterCount, ysize, xsize), np.float32) if buf_obj is None else buf_obj
        k = 0
        for part in self.stack.parts:
            if part.bands == 1:
                out[k] = part.ds.ReadAsArray(xoff, yoff, xsize, ysize)
            else:
                out[k:k + part.bands] = part.ds.ReadAsArray(xoff, yoff, xsize, ysize)
            k += part.bands
        return out


class RasterStack:
    """Several rasters on one grid read as one, their bands stacked in the order the files were given."""

    def __init__(self, parts: Sequence[RasterSource]) -> None:
        self.parts = list(parts)
        self.what = self.parts[0].what
        self.grid = self.parts[0].grid
        self.paths = [p.path for p in self.parts]
        self.path = Path(" + ".join(p.name for p in self.paths))  # for messages: "a.tif + b.tif"
        self.bands = sum(p.bands for p in self.parts)
        self.nodata = [nd for p in self.parts for nd in p.nodata]
        self.dtype = self.parts[0].dtype
        self.resampled = any(p.resampled for p in self.parts)
        self.ds = _StackedDataset(self)

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    def band_of(self, b: int) -> tuple[RasterSource, int]:
        """(source, its band index) of band ``b`` of the stack."""
        for p in self.parts:
            if b < p.bands:
                return p, b
            b -= p.bands
        raise IndexError("band index out of range")

    def read(self, row0: int = 0, row1: int | None = None, col0: int = 0, col1: int | None = None,
             bands: Sequence[int] | None = None) -> np.ndarray:
        """(C, h, w) float32 of the stacked bands; nodata and non-finite values become NaN."""
        idx = list(bands) if bands is not None else list(range(self.bands))
        return np.concatenate([p.read(row0, row1, col0, col1, [i]) for p, i in map(self.band_of, idx)])

    def close(self) -> None:
        for p in self.parts:
            p.close()


def open_stack(paths: str | os.PathLike | Sequence[str | os.PathLike], reference: Grid | None = None,
               what: str = "raster", resampling: str = "bilinear", log=None) -> RasterSource | RasterStack:
    """One raster, or several stacked band-wise in the order given, on ``reference`` (default: the
    first file's grid, onto which the others are then resampled bilinearly)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise BdgfError(f"no {what} was given; give one or more raster files")
    first = RasterSource(paths[0], reference, what, resampling, log)
    if len(paths) == 1:
        return first
    again = sorted({str(Path(p).resolve()) for p in paths if sum(Path(q).resolve() == Path(p).resolve() for q in paths) > 1})
    if again:
        raise BdgfError(f"the {what} {Path(again[0]).name} is given twice; give each file once")
    others = [RasterSource(p, first.grid, what, resampling if reference is not None else "bilinear", log)
              for p in paths[1:]]
    return RasterStack([first, *others])


def _finer(own: Grid, ref: Grid, what: str, name: str) -> bool:
    """True when the raster's pixels cover less ground than the reference grid's (multilooking helps)."""
    b = _bounds_in(own, ref.crs_wkt, what, name) if own.crs_wkt and ref.crs_wkt else own.bounds
    own_area = (b[2] - b[0]) * (b[3] - b[1]) / max(1, own.width * own.height)
    ref_area = abs(ref.geotransform[1] * ref.geotransform[5] - ref.geotransform[2] * ref.geotransform[4])
    return own_area < 0.99 * ref_area


def _db_bands(ds: gdal.Dataset, nodata: Sequence[float | None], what: str, name: str, side: int = 256) -> list[bool]:
    """Per band: in dB? As the diffusion model's scaling decides it: a 1st percentile below 0 (on a
    decimated read of at most ``side`` x ``side`` pixels)."""
    w, h = min(ds.RasterXSize, side), min(ds.RasterYSize, side)
    out = []
    for b in range(ds.RasterCount):
        try:
            a = ds.GetRasterBand(b + 1).ReadAsArray(buf_xsize=w, buf_ysize=h).astype(np.float64)
        except RuntimeError as exc:
            raise read_failure(what, name, 0, ds.RasterYSize, exc) from None
        v = a[np.isfinite(a)]
        if nodata[b] is not None:
            v = v[v != nodata[b]]
        out.append(bool(v.size) and float(np.percentile(v, 1.0)) < 0)
    return out


def _vrt_xml(width: int, height: int, gt: Sequence[float], wkt: str, bands: list[str]) -> str:
    import html

    srs = f"<SRS>{html.escape(wkt)}</SRS>" if wkt else ""
    return (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}'
            f"<GeoTransform>{', '.join(repr(float(v)) for v in gt)}</GeoTransform>{''.join(bands)}</VRTDataset>")


def _vrt_band(i: int, source: str, source_band: int, function: str | None, args: str = "",
              nodata: float | None = None) -> str:
    """A Float32 VRT band with NaN as nodata, optionally through a GDAL pixel function."""
    import html

    nd = "" if nodata is None else f"<NODATA>{nodata!r}</NODATA>"
    src = (f'<ComplexSource><SourceFilename relativeToVRT="0">{html.escape(source)}</SourceFilename>'
           f"<SourceBand>{source_band}</SourceBand>{nd}</ComplexSource>")
    if function is None:
        return f'<VRTRasterBand dataType="Float32" band="{i}"><NoDataValue>nan</NoDataValue>{src}</VRTRasterBand>'
    return (f'<VRTRasterBand dataType="Float32" band="{i}" subClass="VRTDerivedRasterBand">'
            f"<NoDataValue>nan</NoDataValue><PixelFunctionType>{function}</PixelFunctionType>{args}"
            f"<SourceTransferType>Float32</SourceTransferType>{src}</VRTRasterBand>")


def _warp_onto(ds: gdal.Dataset, own: Grid, ref: Grid, what: str, name: str, resampling: str,
               db: Sequence[bool] = (), holder: RasterSource | None = None) -> gdal.Dataset:
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
                            srcNodata=None, dstNodata=np.nan, outputType=gdal.GDT_Float32)
    # NaN (nodata) also where a label raster does not reach: 0 there could be a class (whole codes
    # up to 2^24 are exact in float32)
    try:
        if any(db) and holder is not None:
            return _average_in_power(ds, own, opts, db, holder)
        return gdal.Warp("", ds, options=opts)
    except RuntimeError as exc:
        raise BdgfError(f"cannot resample the {what} {name} onto the spectral grid ({exc}); "
                        "reproject it to the spectral raster's CRS first") from None


def _average_in_power(ds: gdal.Dataset, own: Grid, opts, db: Sequence[bool], holder: RasterSource) -> gdal.Dataset:
    """Block averaging of dB bands in linear power (multilooking), given back in dB: three virtual
    rasters in GDAL's memory file system (dB -> power, the warp, power -> dB), read block by block."""
    import uuid

    base = f"/vsimem/bdgf-{uuid.uuid4().hex}"
    nodata = nodata_values(ds)
    power, warped, back = f"{base}/power.vrt", f"{base}/warped.vrt", f"{base}/db.vrt"
    holder._vsimem += [power, warped, back]
    src = os.path.abspath(ds.GetDescription())
    bands = [_vrt_band(i + 1, src, i + 1, "dB2pow" if db[i] else None, nodata=nodata[i]) for i in range(ds.RasterCount)]
    gdal.FileFromMemBuffer(power, _vrt_xml(own.width, own.height, own.geotransform, own.crs_wkt, bands))
    view = gdal.Warp(warped, power, options=opts)
    view.FlushCache()
    holder._views.append(view)
    # 10 log10(p): GDAL's "dB" pixel function with fact=10 (20 log10 is for amplitudes)
    out = [_vrt_band(i + 1, warped, i + 1, "dB" if db[i] else None, '<PixelFunctionArguments fact="10"/>' if db[i] else "")
           for i in range(ds.RasterCount)]
    gt, wkt = view.GetGeoTransform(), view.GetProjection() or ""
    gdal.FileFromMemBuffer(back, _vrt_xml(view.RasterXSize, view.RasterYSize, gt, wkt, out))
    with pam_off(Path(back)):
        return gdal.Open(back)


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


def class_map_encoding(codes: Sequence[int]) -> tuple[int, int]:
    """(GDAL type, nodata value) of a class map holding ``codes``: the smallest type that holds every
    code and a nodata value that is no code (0 as before when 0 is no code; else the type's top
    value, or its bottom one when codes are negative), so a class coded 0 is never taken for nodata."""
    lo, hi = int(min(codes)), int(max(codes))
    if lo > 0:
        return smallest_int_type(hi), 0
    if lo == 0:
        for gtype, top in ((gdal.GDT_Byte, 255), (gdal.GDT_UInt16, 65535)):
            if hi < top:
                return gtype, top
    if lo > -32768 and hi <= 32767:
        return gdal.GDT_Int16, -32768
    return gdal.GDT_Int32, int(np.iinfo(np.int32).min)


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
        """Embed a colour table and category names (indexed by value, so only for codes 0..255).

        Other codes (negative, above 255) get no colour table: the .qml style written beside the map
        carries their names and colours."""
        if not codes or min(codes) < 0 or max(codes) > 255:
            return
        band = self.ds.GetRasterBand(1)
        ct = gdal.ColorTable()
        top = max(codes)
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
