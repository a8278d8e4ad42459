"""Diffusion features: the scene's grid, no tile seams, streaming API, projection."""
import copy

import numpy as np
import pytest

from bdgf_core.diffusion import DiffusionConfig, extract_features, extract_features_array, fit_projection, pretrain_ddpm
from bdgf_core.errors import Cancelled

H, W = 29, 34  # not multiples of the tiles used: partial edge tiles


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W] / 8.0
    base = np.stack([np.sin(yy), np.cos(xx), np.sin(xx - yy)])
    spe = (np.einsum("kb,khw->bhw", rng.normal(size=(3, 5)), base) * 50 + 300).astype(np.float32)
    sar = ((1.5 + base[:2]) * rng.gamma(4.0, 0.25, size=(2, H, W))).astype(np.float32)
    return spe, sar


@pytest.fixture(scope="module")
def one_tile(model, scene):
    """Projected features of the whole scene computed as a single tile."""
    return extract_features_array(model, *scene, tile=64)


@pytest.fixture(scope="module")
def model(scene):
    cfg = DiffusionConfig(widths=(4, 8, 8), time_dim=8, tile=16, batch=4, lr=1e-3, steps=8,
                          timesteps=(5, 200), feature_channels=6, fit_tiles=3, fit_pixels=1500)
    return pretrain_ddpm(*scene, None, cfg)


def _raw(model):
    m = copy.deepcopy(model)
    m.projection = None
    m.config.feature_channels = 0
    return m


def test_grid_and_metadata(model, one_tile):
    f = one_tile
    assert f.shape == (6, H, W) and f.dtype == np.float32 and np.isfinite(f).all()
    info = model.feature_info()
    # 2 timesteps x 2 modality groups (SAR, spectral) x decoder channels (16 + 8)
    assert info["channels"] == 6 and info["raw_channels"] == 2 * 2 * (16 + 8)
    assert info["groups"] == ["sar", "spectral"] and info["format"] == 2
    assert "PCA" in info["meaning"]
    # whitened: roughly unit variance over the scene
    assert 0.3 < f.std(axis=(1, 2)).mean() < 3


def test_no_tile_seams(model, scene, one_tile):
    raw = _raw(model)
    one = extract_features_array(raw, *scene, tile=64)  # the whole scene in one tile
    tiled = extract_features_array(raw, *scene, tile=12)
    assert one.shape == (raw.raw_feature_channels, H, W)
    scale = np.abs(one).max()
    np.testing.assert_allclose(tiled, one, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(extract_features_array(model, *scene, tile=13), one_tile, atol=1e-4, rtol=0)
    # the comparison is sensitive: without a halo the tile borders show
    seams = extract_features_array(raw, *scene, tile=12, halo=0)
    assert np.abs(seams - one).max() > 1e-2 * scale


def test_streaming_api(model, scene, one_tile):
    spe, sar = scene
    seen = np.zeros((H, W), int)
    reads = []

    def read_window(r0, r1, c0, c1):
        assert 0 <= r0 < r1 <= H and 0 <= c0 < c1 <= W  # in-image windows only
        reads.append((r0, r1, c0, c1))
        return spe[:, r0:r1, c0:c1], sar[:, r0:r1, c0:c1]

    out = np.zeros((6, H, W), np.float32)

    def write_block(r0, c0, block):
        assert block.dtype == np.float32 and block.shape[0] == 6
        seen[r0:r0 + block.shape[1], c0:c0 + block.shape[2]] += 1
        out[:, r0:r0 + block.shape[1], c0:c0 + block.shape[2]] = block

    fractions = []
    info = extract_features(model, read_window, H, W, write_block, tile=16,
                            progress=lambda f, msg: fractions.append(f))
    assert (seen == 1).all()  # every pixel written exactly once
    assert info["channels"] == 6 and fractions[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(out, one_tile, atol=1e-4, rtol=0)
    with pytest.raises(Cancelled):
        extract_features(model, read_window, H, W, write_block, tile=20, cancelled=lambda: True)


def test_noise_depends_on_seed_and_projection_is_fitted_when_missing(model, scene):
    m = copy.deepcopy(model)
    m.config.seed += 1
    a = extract_features_array(_raw(model), *scene, tile=64)
    b = extract_features_array(_raw(m), *scene, tile=64)
    assert not np.allclose(a, b)  # fresh noise per seed
    m.projection = None
    f = extract_features_array(m, *scene, tile=64)
    assert m.projection is not None and f.shape == (6, H, W)


# ---------------------------------------------------------------------------------------------
# Issue 15: the spectral axis is averaged per modality, not over the merged spectral + SAR axis

def test_pool_weights_keep_sar_and_spectral_apart(model):
    """2 SAR + 5 spectral bands padded to 8: each position stands for `stride` bands; SAR and
    spectral positions are averaged apart (weighted by their bands), the padding not at all."""
    assert (model.n_sar, model.n_bands, model.n_padded) == (2, 7, 8)
    assert model.net.feature_strides == [2, 1]
    deep = model.pool_weights(0).numpy()  # 4 positions standing for bands 0-1, 2-3, 4-5, 6-7
    np.testing.assert_allclose(deep, [[1, 0, 0, 0], [0, 2 / 5, 2 / 5, 1 / 5]])
    shallow = model.pool_weights(1).numpy()  # 8 positions, one band each; band 7 is padding
    np.testing.assert_allclose(shallow, [[0.5, 0.5, 0, 0, 0, 0, 0, 0], [0, 0, 0.2, 0.2, 0.2, 0.2, 0.2, 0]])


def test_sar_features_follow_the_sar_bands(model, scene):
    """New speckle on the SAR bands alone moves the SAR-group features far more than the
    spectral-group ones, and more than the old plain mean (where SAR was 2 of 8 positions) moved.
    Measured with this 8-step model: 2.6x and 2.5x."""
    spe, sar = scene
    speckled = sar * np.random.default_rng(1).gamma(1.0, 1.0, sar.shape).astype(np.float32)

    def change(m):
        a, b = extract_features_array(m, spe, sar, tile=64), extract_features_array(m, spe, speckled, tile=64)
        return np.abs(b - a).mean(axis=(1, 2)).reshape(len(m.config.timesteps), -1)

    new = change(_raw(model))
    c_deep, c_shallow = model.feature_layer_channels
    # per timestep: deep layer [SAR c_deep | spectral c_deep], then shallow [SAR | spectral]
    sar_idx = np.r_[0:c_deep, 2 * c_deep:2 * c_deep + c_shallow]
    spe_idx = np.r_[c_deep:2 * c_deep, 2 * c_deep + c_shallow:2 * (c_deep + c_shallow)]
    old = _raw(model)
    old.config.feature_pooling = "mean"
    assert new[:, sar_idx].mean() > 1.8 * new[:, spe_idx].mean()
    assert new[:, sar_idx].mean() > 1.8 * change(old).mean()


def test_old_files_keep_the_plain_mean(model, scene):
    """feature_pooling 'mean' (model files from before issue 15): one group, the spectral-axis mean."""
    old = _raw(model)
    old.config.feature_pooling = "mean"
    assert old.feature_groups == ["all"] and old.feature_info()["format"] == 1
    assert old.raw_feature_channels == 2 * (16 + 8)
    new = extract_features_array(_raw(model), *scene, tile=64)
    mean = extract_features_array(old, *scene, tile=64)
    # the plain mean is the band-weighted mix of the two groups plus the padding position(s)
    assert mean.shape == (48, H, W) and not np.allclose(mean, new[: 48])


def test_projection_fit_computes_each_window_once(model, scene, monkeypatch):
    """The scene is smaller than the fit tile: the fit_tiles draws are one window, computed once."""
    from bdgf_core.diffusion import features as feat_mod

    computed, inner = [], feat_mod._tiles_raw_features

    def counting(m, read_window, height, width, tiles, halo, device):
        computed.extend(tiles)
        return inner(m, read_window, height, width, tiles, halo, device)

    monkeypatch.setattr(feat_mod, "_tiles_raw_features", counting)
    m = copy.deepcopy(model)
    spe, sar = scene
    fit_projection(m, lambda a, b, c, d: (spe[:, a:b, c:d], sar[:, a:b, c:d]), H, W)
    assert model.config.fit_tiles == 3 and computed == [(0, H, 0, W)]
    for k in ("mean", "std", "components"):  # what pretraining fitted (the same draws)
        np.testing.assert_array_equal(m.projection[k], model.projection[k])
