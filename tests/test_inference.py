import numpy as np
import pytest
from osgeo import gdal

from bdgf_core.groundtruth import ClassInfo
from bdgf_core.inference import Inputs, classify, read_block
from bdgf_core.patches import extract_patches, pad_reflect
from bdgf_core.raster import Grid, RasterSource, write_array

CLASSES = [ClassInfo(2, "low", "#112233"), ClassInfo(5, "mid", "#445566"), ClassInfo(9, "high", "#778899")]


class PatchMeanPredictor:
    """Class from the mean of a 5 x 5 patch of band 0 plus the SAR: exercises the halo."""

    halo = 2
    codes = [2, 5, 9]

    def predict_block(self, spectral, sar, features=None):
        h, w = spectral.shape[1] - 4, spectral.shape[2] - 4
        win = np.lib.stride_tricks.sliding_window_view(np.nan_to_num(spectral[0]), (5, 5))
        score = win.mean((-1, -2)) + 0.1 * np.nan_to_num(sar[0, 2:-2, 2:-2])
        logits = np.stack([-np.abs(score - c) for c in (0.2, 0.5, 0.8)])
        e = np.exp(logits * 10)
        return e / e.sum(0)


def whole_image(spec, sar):
    r = np.arange(spec.shape[1]).repeat(spec.shape[2])
    c = np.tile(np.arange(spec.shape[2]), spec.shape[1])
    ps = extract_patches(pad_reflect(np.nan_to_num(spec), 5), r, c, 5)
    score = ps[:, 0].mean((-1, -2)) + 0.1 * np.nan_to_num(sar[0]).ravel()
    best = np.argmin(np.abs(score[:, None] - np.array([0.2, 0.5, 0.8])), 1)
    m = np.array([2, 5, 9])[best].reshape(spec.shape[1:])
    valid = np.isfinite(spec).all(0) & np.isfinite(sar).all(0)
    return np.where(valid, m, 0)


@pytest.fixture()
def scene(tmp_path):
    rng = np.random.default_rng(0)
    g = Grid(37, 23, (0.0, 1.0, 0.0, 23.0, 0.0, -1.0), "")
    spec = rng.random((3, 23, 37)).astype(np.float32)
    sar = rng.random((1, 23, 37)).astype(np.float32)
    spec[1, 5:8, 10:14] = np.nan          # a nodata hole
    sar[0, 22, 0] = np.nan                # and one at a corner
    sp = write_array(tmp_path / "s.tif", spec, g)
    sa = write_array(tmp_path / "a.tif", sar, g)
    return tmp_path, spec, sar, sp, sa


@pytest.mark.parametrize("memory_mb", [16, 64])
def test_streaming_equals_whole_image(scene, memory_mb, monkeypatch):
    tmp, spec, sar, sp, sa = scene
    import bdgf_core.inference as inf

    # force small blocks so that the 23 rows span several blocks with halos
    monkeypatch.setattr(inf, "rows_per_block", lambda *a, **k: 4 if memory_mb == 16 else 23)
    src = RasterSource(sp)
    out = classify(PatchMeanPredictor(), Inputs(src, RasterSource(sa, src.grid)), tmp / "map.tif", CLASSES,
                   tmp / "conf.tif", tmp / "ent.tif", memory_mb=memory_mb)
    m = gdal.Open(out["map"]).ReadAsArray()
    np.testing.assert_array_equal(m, whole_image(spec, sar))
    assert m[6, 11] == 0 and m[22, 0] == 0
    conf = gdal.Open(out["confidence"]).ReadAsArray()
    ent = gdal.Open(out["entropy"]).ReadAsArray()
    ok = m > 0
    assert np.isnan(conf[~ok]).all() and np.isnan(ent[~ok]).all()
    assert ((conf[ok] >= 1 / 3 - 1e-6) & (conf[ok] <= 1 + 1e-6)).all()
    assert ((ent[ok] >= 0) & (ent[ok] <= np.log(3) + 1e-5)).all()
    # where the model is sure, entropy is low; where unsure, high
    assert np.corrcoef(conf[ok], ent[ok])[0, 1] < -0.8


def test_block_halo_reads_equal_padded_image(scene):
    _, spec, sar, sp, sa = scene
    src = RasterSource(sp)
    inputs = Inputs(src, RasterSource(sa, src.grid))
    padded = np.pad(spec, ((0, 0), (3, 3), (3, 3)), mode="reflect")
    for r0, r1 in [(0, 5), (5, 11), (20, 23), (0, 23)]:
        blk = read_block(inputs, r0, r1, 3)[0]
        np.testing.assert_array_equal(blk, padded[:, r0:r1 + 6])


def test_map_carries_colours_categories_georef_and_qml(scene):
    tmp, spec, sar, sp, sa = scene
    src = RasterSource(sp)
    out = classify(PatchMeanPredictor(), Inputs(src, RasterSource(sa, src.grid)), tmp / "m.tif", CLASSES)
    ds = gdal.Open(out["map"])
    b = ds.GetRasterBand(1)
    assert b.DataType == gdal.GDT_Byte and b.GetNoDataValue() == 0
    assert ds.GetGeoTransform() == src.grid.geotransform
    cats = b.GetCategoryNames()
    assert cats[2] == "low" and cats[5] == "mid" and cats[9] == "high"
    assert b.GetColorTable().GetColorEntry(5)[:3] == (0x44, 0x55, 0x66)
    qml = (tmp / "m.qml").read_text()
    for c in CLASSES:
        assert f'value="{c.code}" color="{c.color}"' in qml and f'label="{c.name}"' in qml
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("m.")) == ["m.qml", "m.tif", "m.tif.aux.xml"]


def test_failure_mid_run_leaves_no_file(scene):
    tmp, spec, sar, sp, sa = scene

    class Boom(PatchMeanPredictor):
        def predict_block(self, *a):
            raise RuntimeError("boom")

    src = RasterSource(sp)
    with pytest.raises(RuntimeError):
        classify(Boom(), Inputs(src, RasterSource(sa, src.grid)), tmp / "x.tif", CLASSES, tmp / "xc.tif")
    assert not [p for p in tmp.iterdir() if p.name.startswith((".x", "x"))]
