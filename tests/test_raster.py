import numpy as np
import pytest
from osgeo import gdal, osr

from bdgf_core.errors import BdgfError
from bdgf_core.raster import Grid, RasterSource, write_array


def utm(epsg=32632):
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    return s.ExportToWkt()


def grid(w=20, h=10, x0=1000.0, y0=2000.0, px=10.0, crs=None):
    return Grid(w, h, (x0, px, 0.0, y0, 0.0, -px), utm() if crs is None else crs)


def test_read_converts_nodata_and_nan_to_nan(tmp_path):
    a = np.arange(2 * 10 * 20, dtype=np.float32).reshape(2, 10, 20)
    a[0, 1, 2] = -9999
    a[1, 3, 4] = np.nan
    p = write_array(tmp_path / "a.tif", a, grid(), nodata=-9999)
    x = RasterSource(p).read()
    assert x.dtype == np.float32 and x.shape == (2, 10, 20)
    assert np.isnan(x[0, 1, 2]) and np.isnan(x[1, 3, 4])
    assert x[0, 0, 0] == 0 and x[1, 9, 19] == a[1, 9, 19]


def test_window_read_matches_whole(tmp_path):
    a = np.random.default_rng(0).random((3, 10, 20)).astype(np.float32)
    src = RasterSource(write_array(tmp_path / "a.tif", a, grid()))
    np.testing.assert_array_equal(src.read(2, 7, 3, 11), a[:, 2:7, 3:11])


def test_same_grid_is_not_resampled(tmp_path):
    g = grid()
    ref = RasterSource(write_array(tmp_path / "r.tif", np.ones((2, 10, 20), np.float32), g))
    other = RasterSource(write_array(tmp_path / "o.tif", np.ones((1, 10, 20), np.float32), g), ref.grid)
    assert not other.resampled


def test_other_grid_is_resampled_onto_reference(tmp_path):
    ref_g = grid(20, 10, px=10.0)
    # a coarser raster of the same area: 10 x 5 pixels of 20 m, values = column index
    coarse = np.tile(np.arange(10, dtype=np.float32), (5, 1))[None]
    logs = []
    ref = RasterSource(write_array(tmp_path / "r.tif", np.ones((2, 10, 20), np.float32), ref_g))
    src = RasterSource(write_array(tmp_path / "c.tif", coarse, grid(10, 5, px=20.0)), ref.grid, log=logs.append)
    x = src.read()
    assert src.resampled and x.shape == (1, 10, 20)
    assert logs and "resampled" in logs[0]
    # bilinear: fine columns 2k and 2k+1 straddle coarse column k, values increase left to right
    assert np.nanmax(np.abs(x[0, 5, 4:16] - (np.arange(4, 16) / 2 - 0.25))) < 0.3


def test_other_crs_is_reprojected(tmp_path):
    ref = RasterSource(write_array(tmp_path / "r.tif", np.ones((2, 10, 20), np.float32),
                                   grid(x0=500000, y0=5000000)))
    # a raster in UTM 33N around the same place
    s33 = osr.SpatialReference(); s33.ImportFromEPSG(32633)
    s32 = osr.SpatialReference(); s32.ImportFromEPSG(32632)
    for s in (s32, s33):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(s32, s33)
    x, y, _ = ct.TransformPoint(499800.0, 5000100.0)
    p33 = write_array(tmp_path / "o33.tif", np.full((1, 40, 60), 7, np.float32),
                      Grid(60, 40, (x - 100, 10.0, 0, y + 100, 0, -10.0), s33.ExportToWkt()))
    src = RasterSource(p33, ref.grid)
    assert src.resampled
    v = src.read()
    assert np.nanmean(v) == pytest.approx(7.0) and np.isfinite(v).mean() > 0.9


def test_no_overlap_is_refused(tmp_path):
    ref = RasterSource(write_array(tmp_path / "r.tif", np.ones((2, 10, 20), np.float32), grid()))
    far = write_array(tmp_path / "f.tif", np.ones((1, 10, 20), np.float32), grid(x0=900000))
    with pytest.raises(BdgfError, match="does not overlap"):
        RasterSource(far, ref.grid, what="SAR raster")


def test_missing_and_non_raster_files_get_clear_errors(tmp_path):
    with pytest.raises(BdgfError, match="does not exist"):
        RasterSource(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(BdgfError, match="cannot be read as a raster"):
        RasterSource(bad)


def test_write_is_atomic_and_keeps_georeferencing(tmp_path):
    g = grid()
    p = write_array(tmp_path / "o.tif", np.zeros((1, 10, 20), np.uint8), g, nodata=0)
    ds = gdal.Open(str(p))
    assert ds.GetGeoTransform() == g.geotransform
    assert osr.SpatialReference(ds.GetProjection()).GetAuthorityCode(None) == "32632"
    assert [f.name for f in tmp_path.iterdir()] == ["o.tif"]
