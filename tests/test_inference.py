"""Streaming classification: blocks equal the whole image, map metadata, confidence and entropy,
the BDGF predictor (exact shared first layers) and diffusion features computed during the run."""
import numpy as np
import pytest
import torch
from osgeo import gdal

from bdgf_core.groundtruth import ClassInfo
from bdgf_core.inference import DiffusionFeatures, Inputs, classify, read_block
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


def check_confidence_and_entropy(m, conf, ent, n_classes):
    """Honest invariants of conf = max_k p_k and entropy H = -sum_k p_k log p_k (nats) of one pixel.

    1/C <= conf <= 1; H >= -log(conf) (every log p_k <= log conf); Fano: H <= h(conf) + (1 - conf) log(C - 1),
    h the binary entropy. Nodata pixels (map 0) are NaN in both.
    """
    ok = m > 0
    assert np.isnan(conf[~ok]).all() and np.isnan(ent[~ok]).all()
    c, h = conf[ok].astype(np.float64), ent[ok].astype(np.float64)
    assert ((c >= 1 / n_classes - 1e-6) & (c <= 1 + 1e-6)).all()
    assert (h >= -np.log(c) - 1e-5).all()
    cc = np.clip(c, 1e-12, 1 - 1e-12)
    fano = -(cc * np.log(cc) + (1 - cc) * np.log(1 - cc)) + (1 - cc) * np.log(n_classes - 1)
    assert (h <= fano + 1e-5).all()


@pytest.mark.parametrize("block_rows", [1, 4, 7, 23])
def test_streaming_equals_whole_image(scene, block_rows, monkeypatch):
    tmp, spec, sar, sp, sa = scene
    import bdgf_core.inference as inf

    # blocks of 1..23 rows: the 23 rows span several blocks with halos, or one block
    monkeypatch.setattr(inf, "rows_per_block", lambda *a, **k: block_rows)
    src = RasterSource(sp)
    out = classify(PatchMeanPredictor(), Inputs(src, RasterSource(sa, src.grid)), tmp / "map.tif", CLASSES,
                   tmp / "conf.tif", tmp / "ent.tif")
    m = gdal.Open(out["map"]).ReadAsArray()
    np.testing.assert_array_equal(m, whole_image(spec, sar))
    assert m[6, 11] == 0 and m[22, 0] == 0
    conf = gdal.Open(out["confidence"]).ReadAsArray()
    ent = gdal.Open(out["entropy"]).ReadAsArray()
    check_confidence_and_entropy(m, conf, ent, 3)
    ok = m > 0
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


# --------------------------------------------------------------------------------------------
# The BDGF predictor: streamed map = whole-image prediction of the plain network, any block and batch

def _random_bdgf(spectral=6, sar=2, features=3, patch=5, classes=3, seed=0, adaptive=False):
    """A random BDGF predictor; without edge-aware patches by default, whose pulled patches no layer can share."""
    from bdgf_core.bdgf_model import BDGFPredictor
    from bdgf_core.network.bdgf import BDGFConfig, BDGFNet

    torch.manual_seed(seed)
    net = BDGFNet(spectral, sar, features, classes,
                  BDGFConfig(patch=patch, embed=16, tokens=2, adaptive=adaptive)).eval()
    with torch.no_grad():  # BatchNorm statistics away from identity, so that they matter
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    stats = {"spectral_mean": np.full(spectral, 0.5, np.float32), "spectral_std": np.full(spectral, 0.3, np.float32),
             "sar_mean": np.zeros(sar, np.float32), "sar_std": np.ones(sar, np.float32)}
    return BDGFPredictor(net, stats, [2, 5, 9][:classes])


def _bdgf_whole_image(pred, spec, sar, feat):
    """Per-pixel patches of the whole image through the plain network (no tiles, no shared layers)."""
    from bdgf_core.normalise import apply
    from bdgf_core.training import predict_pixels

    s = np.nan_to_num(apply(spec, pred.stats["spectral_mean"], pred.stats["spectral_std"]))
    a = np.nan_to_num(apply(sar, pred.stats["sar_mean"], pred.stats["sar_std"]))
    h, w = spec.shape[1:]
    probs = predict_pixels(pred.net, s, a, np.nan_to_num(feat), np.arange(h * w), pred.patch)
    return probs.T.reshape(-1, h, w)


@pytest.fixture()
def bdgf_scene(scene):
    tmp, spec, sar, sp, sa = scene
    rng = np.random.default_rng(1)
    spec6 = np.concatenate([spec, rng.random((3,) + spec.shape[1:]).astype(np.float32)])
    spec6[4, 0, 30:37] = np.nan  # nodata on the first row, at the right border
    feat = rng.normal(size=(3,) + spec.shape[1:]).astype(np.float32)
    sar2 = np.concatenate([sar, rng.random(sar.shape).astype(np.float32)])
    g = RasterSource(sp).grid
    paths = [write_array(tmp / f"{n}.tif", a, g) for n, a in (("s6", spec6), ("a2", sar2), ("f", feat))]
    return tmp, spec6, sar2, feat, paths


@pytest.mark.parametrize("block_rows,batch", [(2, 7), (5, 40), (23, 1024)])
def test_bdgf_streaming_equals_whole_image(bdgf_scene, block_rows, batch, monkeypatch):
    import bdgf_core.inference as inf

    tmp, spec, sar, feat, (sp, sa, fp) = bdgf_scene
    pred = _random_bdgf()
    pred.batch_size, pred.fixed_batch = batch, True  # batch 7: 2 x 3 tiles and 1-wide edge tiles
    monkeypatch.setattr(inf, "rows_per_block", lambda *a, **k: block_rows)
    src = RasterSource(sp)
    out = classify(pred, Inputs(src, RasterSource(sa, src.grid), RasterSource(fp, src.grid)), tmp / "b.tif",
                   CLASSES, tmp / "bc.tif", tmp / "be.tif")
    m, conf, ent = (gdal.Open(out[k]).ReadAsArray() for k in ("map", "confidence", "entropy"))
    want = _bdgf_whole_image(pred, spec, sar, feat)
    valid = np.isfinite(spec).all(0) & np.isfinite(sar).all(0)
    assert (m[~valid] == 0).all() and (m[valid] > 0).all() and not valid[0, 30:37].any()
    np.testing.assert_allclose(conf[valid], want.max(0)[valid], rtol=1e-5, atol=1e-6)
    top2 = np.sort(want, 0)[-2:]
    sure = valid & (top2[1] - top2[0] > 1e-4)  # the argmax is decided beyond float noise
    np.testing.assert_array_equal(m[sure], np.array([2, 5, 9])[want.argmax(0)][sure])
    check_confidence_and_entropy(m, conf, ent, 3)


@pytest.mark.parametrize("patch", [1, 3, 5])
def test_shared_first_layers_equal_the_per_patch_layers(patch):
    """Each shared layer's output equals the module run on the patches (zero padding at the patch border)."""
    from bdgf_core.patchconv import SharedFirstLayers, _Shared, patches

    pred = _random_bdgf(patch=patch)
    plan = SharedFirstLayers.of(pred.net)
    found = {name for name, _ in plan.names}
    # the raw-input layers of the three branches; nothing deeper
    assert {"cnn.w1_3d", "cnn.w1_2d", "cnn.w2_2d", "cnn.w3_2d", "cnn.w4_2d", "trans.tok_spec.conv.0",
            "trans.tok_sar.conv.0"} <= found
    ca_dif = {"mamba.ca_dif.q", "mamba.ca_dif.k", "mamba.ca_dif.v"}
    if pred.net.config.mamba_dif_pass:  # eq. 24: f_CA^dif reads f_m^dif, a Mamba pass of each patch
        assert not ca_dif & found
    else:  # model files of version 1: f_CA^dif reads the raw diffusion features
        assert ca_dif <= found
    assert not any(n.startswith(("cnn.w2_3d", "cnn.w5", "cnn.w6", "mamba.ca_spec", "mamba.w11")) for n in found)
    rng = np.random.default_rng(2)
    chans = {"spec": 6, "sar": 2, "dif": 3}
    for th, tw in [(4, 6), (1, 5), (3, 1)]:
        wins = {k: torch.from_numpy(rng.normal(size=(c, th + patch - 1, tw + patch - 1)).astype(np.float32))
                for k, c in chans.items()}
        with torch.no_grad():
            for name, source in plan.names:
                inner = pred.net.get_submodule(name)
                shared = _Shared(inner, source, plan)
                x = patches(wins[source], patch)
                want = inner(x.unsqueeze(1) if shared.spectral_pad is not None else x)
                got = shared._from_window(wins[source], th, tw, patch)
                assert got.shape == want.shape, name
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)


def test_shared_layers_fall_back_and_are_restored():
    """Called with anything but the tile's raw patches, a stand-in runs the original module; the net
    gets its modules back after a block, also when the prediction fails."""
    from bdgf_core.patchconv import SharedFirstLayers
    from bdgf_core.training import predict_block

    pred = _random_bdgf(patch=3)
    net = pred.net
    before = dict(net.named_modules())
    plan = SharedFirstLayers.of(net)
    x = torch.randn(4, 3, 3, 3)
    with plan.installed(), torch.no_grad():
        stand_in = net.get_submodule("cnn.w1_2d")
        assert stand_in is not before["cnn.w1_2d"]
        torch.testing.assert_close(stand_in(x), before["cnn.w1_2d"](x))  # no tile set: the module itself
    assert dict(net.named_modules()) == before
    blocks = [np.zeros((c, 6, 6), np.float32) for c in (6, 2, 3)]
    with pytest.raises(Exception):
        predict_block(net, blocks[0], blocks[1], np.zeros((5, 6, 6), np.float32), 3)  # wrong feature channels
    assert dict(net.named_modules()) == before


def test_bdgf_batch_is_sized_from_the_budget():
    pred = _random_bdgf(patch=5)
    per_px = pred.bytes_per_batch_pixel()
    assert per_px > 4 * (6 + 2 + 3) * 25  # at least the patches themselves
    resident = pred.resident_bytes()
    for budget in (2**30, 128 * 2**20, resident + 2**20):
        need = pred.plan(budget)
        assert 1 <= pred.batch_size <= 256 and need == resident + int(per_px * pred.batch_size)
        # the batch takes at most half of what the resident part leaves (at least one pixel)
        assert pred.batch_size == 1 or pred.batch_size * per_px <= 0.5 * (budget - resident)
    assert pred.batch_size < 256
    pred.fixed_batch, pred.batch_size = True, 1000  # --batch-size is kept whatever the budget
    pred.plan(128 * 2**20)
    assert pred.batch_size == 1000


# --------------------------------------------------------------------------------------------
# Diffusion features computed inside the classification equal the feature raster of Pretrain DDPM

@pytest.fixture(scope="module")
def diffusion(tmp_path_factory):
    from bdgf_core.diffusion import DiffusionConfig, extract_features_array, pretrain_ddpm

    tmp = tmp_path_factory.mktemp("dif")
    rng = np.random.default_rng(5)
    h, w = 37, 29  # not multiples of the tile: partial tiles at the right and bottom
    yy, xx = np.mgrid[0:h, 0:w] / 6.0
    spec = (np.stack([np.sin(yy), np.cos(xx), np.sin(xx + yy), np.cos(yy - xx), yy / 5, xx / 5]) * 40 + 200
            + rng.normal(0, 3, (6, h, w))).astype(np.float32)
    sar = (rng.gamma(4.0, 0.25, (2, h, w)) * (1.5 + np.sin(yy))).astype(np.float32)
    spec[1, 20:23, 3:6] = np.nan  # a nodata hole
    cfg = DiffusionConfig(widths=(4, 8, 8), time_dim=8, tile=8, batch=4, lr=1e-3, steps=2, timesteps=(5, 100),
                          feature_channels=3, fit_tiles=3, fit_pixels=600, extract_batch=3)
    model = pretrain_ddpm(spec, sar, None, cfg)
    feats = extract_features_array(model, spec, sar, tile=cfg.tile)
    g = Grid(w, h, (0.0, 1.0, 0.0, float(h), 0.0, -1.0), "")
    paths = [write_array(tmp / f"{n}.tif", a, g) for n, a in (("s", spec), ("a", sar), ("f", feats))]
    return tmp, model, spec, sar, feats, paths


@pytest.mark.parametrize("block_rows", [3, 16, 37])
def test_features_computed_in_the_run_equal_the_feature_raster(diffusion, block_rows, monkeypatch):
    import bdgf_core.inference as inf

    tmp, model, spec, sar, feats, (sp, ap, fp) = diffusion
    pred = _random_bdgf(spectral=6, sar=2, features=3, patch=5)
    pred.batch_size, pred.fixed_batch = 50, True
    monkeypatch.setattr(inf, "rows_per_block", lambda *a, **k: block_rows)
    src = RasterSource(sp)
    a = RasterSource(ap, src.grid)
    ref = classify(pred, Inputs(src, a, RasterSource(fp, src.grid)), tmp / f"r{block_rows}.tif", CLASSES,
                   tmp / f"rc{block_rows}.tif")
    dif = DiffusionFeatures(model, src.height, src.width)
    calls = []
    rows = dif.rows
    monkeypatch.setattr(dif, "rows", lambda *args: calls.append(args[:2]) or rows(*args))
    got = classify(pred, Inputs(src, a, diffusion=dif), tmp / f"d{block_rows}.tif", CLASSES,
                   tmp / f"dc{block_rows}.tif")
    m_ref, m_got = (gdal.Open(o["map"]).ReadAsArray() for o in (ref, got))
    c_ref, c_got = (gdal.Open(o["confidence"]).ReadAsArray() for o in (ref, got))
    np.testing.assert_allclose(c_got, c_ref, rtol=1e-4, atol=1e-5)
    assert (m_got == m_ref).mean() > 0.99 and (m_got[20:23, 3:6] == 0).all()
    assert len(calls) == -(-37 // block_rows)  # one feature computation per block, streaming
    # each block's rows plus the patch halo (2 rows each side), never the whole scene at once
    assert all(b - a <= block_rows + 4 for a, b in calls)


def test_diffusion_features_need_the_fitted_projection(diffusion):
    import copy

    from bdgf_core.errors import BdgfError

    _, model, *_ = diffusion
    m = copy.deepcopy(model)
    m.projection = None
    with pytest.raises(BdgfError, match="projection"):
        DiffusionFeatures(m, 10, 10)
