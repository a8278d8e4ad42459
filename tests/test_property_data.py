"""Property-based tests of the data layer (hypothesis): random grids, band counts, data types,
nodata and polygons go through reading (bdgf_core.raster), warping onto the spectral grid,
rasterising the ground truth (bdgf_core.groundtruth) and sampling (bdgf_core.sampling).

Invariants: shapes and grids; nodata and NaN read as NaN and nothing else does; warped values
stay within the source's range and are NaN off its extent; each labelled pixel carries the code
of the last polygon holding its centre (GDAL burns in feature order), and only those pixels are
labelled; no sample on nodata or off the labels; training, validation and test never share a
pixel; no class gets more training pixels than requested.

Polygon edges sit a quarter pixel off the pixel centres, so "inside" is never ambiguous.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from osgeo import gdal, ogr, osr

from bdgf_core.errors import BdgfError
from bdgf_core.groundtruth import load_ground_truth
from bdgf_core.raster import Grid, RasterSource, write_array
from bdgf_core.sampling import split_samples

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NODATA = -9999.0


def utm32() -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(32632)
    return s.ExportToWkt()


WKT = utm32()


@dataclass
class Scene:
    grid: Grid
    spectral: np.ndarray          # (B, H, W) as written
    spectral_missing: np.ndarray  # (H, W) bool: nodata or NaN in some band
    dtype: str
    sar_grid: Grid
    sar: np.ndarray               # (S, h, w) on sar_grid, NaN = nodata
    polygons: list                # [(x0, y0, x1, y1, code)] in map units, feature order


@st.composite
def scenes(draw) -> Scene:
    w, h = draw(st.integers(4, 20)), draw(st.integers(4, 20))
    px = draw(st.sampled_from([1.0, 2.5, 10.0, 30.0]))
    x0 = 500000.0 + px * draw(st.integers(-50, 50))
    y0 = 5000000.0 + px * draw(st.integers(-50, 50))
    grid = Grid(w, h, (x0, px, 0.0, y0, 0.0, -px), WKT)
    bands = draw(st.integers(2, 5))
    dtype = draw(st.sampled_from(["float32", "int16"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    spec = (rng.random((bands, h, w)) * 1000).astype(np.float32)
    if dtype == "int16":
        spec = np.round(spec)
    missing = rng.random((bands, h, w)) < draw(st.sampled_from([0.0, 0.0, 0.05, 0.05, 0.3, 1.0]))
    spec[missing] = NODATA
    if dtype == "float32" and draw(st.booleans()):
        nan = rng.random((bands, h, w)) < 0.05
        spec[nan] = np.nan
        missing |= nan
    # SAR: the same grid, or another pixel size / origin that overlaps the spectral extent
    if draw(st.booleans()):
        sar_grid = grid
    else:
        spx = px * draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]))
        sw, sh = draw(st.integers(2, 24)), draw(st.integers(2, 24))
        ox = x0 + px * draw(st.floats(-0.5 * w, 0.8 * w)) - spx * sw / 2
        oy = y0 - px * draw(st.floats(-0.5 * h, 0.8 * h)) + spx * sh / 2
        sar_grid = Grid(sw, sh, (ox, spx, 0.0, oy, 0.0, -spx), WKT)
        xmin, ymin, xmax, ymax = sar_grid.bounds
        gx0, gy0, gx1, gy1 = grid.bounds
        assume(xmin < gx1 and xmax > gx0 and ymin < gy1 and ymax > gy0)
    sar_bands = draw(st.integers(1, 2))
    sar = (rng.random((sar_bands, sar_grid.height, sar_grid.width)) * 0.5 - 30).astype(np.float32)
    sar[rng.random(sar.shape) < draw(st.sampled_from([0.0, 0.1]))] = np.nan
    polygons = []
    for _ in range(draw(st.integers(1, 6))):
        # corners in pixel units, a quarter pixel off the centres; may reach outside the raster
        c0, c1 = sorted(draw(st.lists(st.integers(-2, w + 1), min_size=2, max_size=2, unique=True)))
        r0, r1 = sorted(draw(st.lists(st.integers(-2, h + 1), min_size=2, max_size=2, unique=True)))
        code = draw(st.integers(1, 4))
        polygons.append((x0 + (c0 + 0.25) * px, y0 - (r1 + 0.25) * px, x0 + (c1 + 0.25) * px,
                         y0 - (r0 + 0.25) * px, code))
    return Scene(grid, spec, missing.any(0), dtype, sar_grid, sar, polygons)


def write(scene: Scene, folder: Path) -> tuple[Path, Path, Path]:
    data_type = gdal.GDT_Float32 if scene.dtype == "float32" else gdal.GDT_Int16
    spec = write_array(folder / "spectral.tif", scene.spectral, scene.grid, nodata=NODATA, data_type=data_type)
    sar = write_array(folder / "sar.tif", scene.sar, scene.sar_grid)  # NaN without a nodata value
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    gt = folder / "truth.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gt))
    layer = ds.CreateLayer("truth", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    for x0, y0, x1, y1, code in scene.polygons:
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("class", code)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        layer.CreateFeature(f)
    ds = None
    return spec, sar, gt


def centres(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    x0, px, _, y0, _, py = grid.geotransform
    cols, rows = np.meshgrid(np.arange(grid.width), np.arange(grid.height))
    return x0 + (cols + 0.5) * px, y0 + (rows + 0.5) * py


def expected_labels(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(codes, region ids) a correct rasteriser gives: the last polygon holding the centre wins."""
    cx, cy = centres(scene.grid)
    labels = np.zeros(cx.shape, np.int32)
    regions = np.zeros(cx.shape, np.int32)
    for rid, (x0, y0, x1, y1, code) in enumerate(scene.polygons, start=1):
        inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
        labels[inside], regions[inside] = code, rid
    return labels, regions


@SETTINGS
@given(scene=scenes())
def test_reading_and_warping_onto_the_spectral_grid(scene):
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, sar_path, _ = write(scene, Path(tmp))
        spec = RasterSource(spec_path, what="spectral raster")
        x = spec.read()
        assert x.dtype == np.float32 and x.shape == scene.spectral.shape
        assert spec.grid.same_as(scene.grid)
        nan = np.isnan(x)
        assert (nan == (np.isnan(scene.spectral) | (scene.spectral == NODATA))).all()
        np.testing.assert_array_equal(x[~nan], scene.spectral[~nan])
        # windows read the same values as the whole raster
        h, w = scene.grid.height, scene.grid.width
        np.testing.assert_array_equal(spec.read(h // 3, h, w // 4, w), x[:, h // 3:, w // 4:])

        sar = RasterSource(sar_path, spec.grid, what="SAR raster")
        y = sar.read()
        assert y.shape == (scene.sar.shape[0], h, w) and sar.grid == spec.grid
        assert sar.resampled == (not scene.sar_grid.same_as(scene.grid))
        event(f"SAR {'resampled' if sar.resampled else 'on the spectral grid'}, spectral {scene.dtype}")
        if not sar.resampled:
            np.testing.assert_array_equal(np.isnan(y), np.isnan(scene.sar))
            np.testing.assert_array_equal(y[~np.isnan(y)], scene.sar[~np.isnan(scene.sar)])
        else:
            # bilinear values are convex combinations of the source's valid values
            for b in range(y.shape[0]):
                src = scene.sar[b][np.isfinite(scene.sar[b])]
                got = y[b][np.isfinite(y[b])]
                if src.size and got.size:
                    assert got.min() >= src.min() - 1e-3 and got.max() <= src.max() + 1e-3
                if not src.size:
                    assert not got.size
            # well off the SAR's extent there is no data
            cx, cy = centres(scene.grid)
            xmin, ymin, xmax, ymax = scene.sar_grid.bounds
            margin = abs(scene.sar_grid.geotransform[1])
            off = (cx < xmin - margin) | (cx > xmax + margin) | (cy < ymin - margin) | (cy > ymax + margin)
            assert np.isnan(y[:, off]).all()
        spec.close()
        sar.close()


@SETTINGS
@given(scene=scenes(), samples=st.integers(1, 40), strategy=st.sampled_from(["polygons", "blocks", "pixels"]),
       validation=st.sampled_from([0.0, 0.2]), seed=st.integers(0, 1000))
def test_rasterising_and_sampling(scene, samples, strategy, validation, seed):
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, sar_path, gt_path = write(scene, Path(tmp))
        spec = RasterSource(spec_path)
        sar = RasterSource(sar_path, spec.grid)
        want_labels, want_regions = expected_labels(scene)
        if not (want_labels > 0).any():
            event("no polygon covers a pixel")
            with pytest.raises(BdgfError, match="covers a pixel"):
                load_ground_truth(gt_path, spec.grid)
            return
        gt = load_ground_truth(gt_path, spec.grid)
        assert gt.labels.shape == gt.regions.shape == (scene.grid.height, scene.grid.width)
        np.testing.assert_array_equal(gt.labels, want_labels)
        assert ((gt.regions > 0) == (gt.labels > 0)).all()
        # a region is one polygon: one id per polygon that kept a pixel, one code per region
        for rid in np.unique(gt.regions[gt.regions > 0]):
            assert len(np.unique(gt.labels[gt.regions == rid])) == 1
        assert len(np.unique(gt.regions[gt.regions > 0])) == len(np.unique(want_regions[want_regions > 0]))
        assert {c.code for c in gt.classes} == {p[4] for p in scene.polygons}

        valid = np.isfinite(spec.read()).all(0) & np.isfinite(sar.read()).all(0)
        try:
            split = split_samples(gt, samples, strategy, seed, validation, block_size=4, valid=valid)
        except BdgfError as exc:
            # only a class without a usable pixel may stop the split, with one line naming it
            message = str(exc)
            event(f"split refused: {message.split(';')[0][:40]}")
            assert "\n" not in message and "class" in message
            usable = {int(c) for c in np.unique(gt.labels[valid & (gt.labels > 0)])}
            assert usable != {c.code for c in gt.classes} or "training pixel" in message
            return
        event(f"split {strategy}{' with validation' if split.val.size else ''}")
        parts = [split.train, split.val, split.test]
        every = np.concatenate(parts)
        assert every.size == np.unique(every).size, "a pixel is in two sets"
        assert every.size == 0 or (every.min() >= 0 and every.max() < gt.labels.size)
        assert valid.ravel()[every].all(), "a sample on nodata"
        assert (gt.labels.ravel()[every] > 0).all(), "a sample off the ground truth"
        # every sample lies inside a polygon of its class (the geometry, not only the raster)
        cx, cy = (c.ravel()[every] for c in centres(scene.grid))
        codes = gt.labels.ravel()[every]
        inside = np.zeros(every.size, bool)
        for x0, y0, x1, y1, code in scene.polygons:
            inside |= (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1) & (codes == code)
        assert inside.all()
        train_codes = gt.labels.ravel()[split.train]
        for c in {c.code for c in gt.classes}:
            n = int((train_codes == c).sum())
            assert 1 <= n <= samples, (c, n, samples)
        spec.close()
        sar.close()
