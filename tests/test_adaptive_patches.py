"""Edge-aware patches (issue 15, network/adaptive.py): neighbours unlike the centre take the centre's values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bdgf_core.modelfile import load_model, save_model
from bdgf_core.network import BDGFConfig, BDGFNet
from bdgf_core.network.adaptive import EdgeAwarePatch, calibrate
from bdgf_core.network.bdgf import LEGACY
from bdgf_core.patches import extract_patches, pad_reflect
from bdgf_core.training import fit_bdgf, predict_block, predict_pixels

SMALL = dict(embed=16, tokens=2)
CFG = dict(patch=5, epochs=2, batch_size=16, milestones=(1,), **SMALL)


def _two_classes(h: int = 16, w: int = 16, noise: float = 0.1, seed: int = 0):
    """Left half class 0, right half class 1: spectra differ by 1 in every band, SAR is the same noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(w)[None] >= w // 2).repeat(h, 0).astype(np.int64)
    spec = (rng.normal(0, noise, (6, h, w)) + labels[None]).astype(np.float32)
    sar = rng.normal(0, noise, (2, h, w)).astype(np.float32)
    return spec, sar, labels


def test_calibration_measures_same_class_neighbours() -> None:
    spec, sar, labels = _two_classes(noise=0.1)
    rows, cols = np.meshgrid(np.arange(2, 14), np.arange(1, 6), indexing="ij")  # inside class 0, off the edge
    tau = calibrate([spec, sar], rows.ravel(), cols.ravel())
    # two independent pixels of noise 0.1 differ by 2 * 0.01 per band on average; the 0.95 quantile is above it
    assert 0.02 < tau[0] < 0.04 and 0.02 < tau[1] < 0.1
    # the distance across the edge (about 1 per band) is far beyond tau: such neighbours get weight 0
    edge = EdgeAwarePatch()
    edge.set_tau(tau)
    p = 5
    padded = [pad_reflect(x, p) for x in (spec, sar)]
    at_edge = [torch.from_numpy(extract_patches(x, np.array([8]), np.array([7]), p)) for x in padded]  # last class-0 column
    w = edge.weights(*at_edge)[0, 0].numpy()
    assert w[2, 2] == 1.0
    assert np.all(w[:, 3:] == 0.0)  # the other class's columns
    assert w[:, :3].mean() > 0.9  # the centre's own class keeps (nearly) all its weight


def test_pulled_patch_at_an_edge_looks_like_an_interior_one() -> None:
    spec, sar, _ = _two_classes(noise=0.05)
    edge = EdgeAwarePatch()
    edge.set_tau(calibrate([spec, sar], np.arange(2, 14), np.full(12, 2)))
    p = 5
    padded = [pad_reflect(x, p) for x in (spec, sar)]
    s, a = (torch.from_numpy(extract_patches(x, np.array([8]), np.array([7]), p)) for x in padded)
    dif = torch.randn(1, 3, p, p)
    ps, pa, pd = edge(s, a, dif)
    centre = s[0, :, 2, 2]
    torch.testing.assert_close(ps[0, :, :, 3:], centre[:, None, None].expand(-1, p, 2))  # far side = the centre
    torch.testing.assert_close(pd[0, :, :, 3:], dif[0, :, 2:3, 2:3].expand(-1, p, 2))  # diffusion features too
    assert float(ps[0].mean()) < 0.2  # the patch is class 0's, not half class 1's (mean 0.5 before)
    assert float(s[0].mean()) > 0.3


def test_same_class_noise_keeps_the_papers_patch() -> None:
    """Where nothing tells the neighbours from the centre (one class, pure noise) the patch is left alone."""
    rng = np.random.default_rng(1)
    spec = rng.normal(0, 1, (6, 30, 30)).astype(np.float32)
    sar = rng.gamma(1.0, 1.0, (2, 30, 30)).astype(np.float32)  # single-look speckle
    edge = EdgeAwarePatch()
    rows, cols = np.divmod(rng.permutation(900)[:200], 30)
    edge.set_tau(calibrate([spec, sar], rows, cols))
    p = 9
    padded = [pad_reflect(x, p) for x in (spec, sar)]
    r, c = np.divmod(rng.permutation(900)[:100], 30)
    w = edge.weights(*(torch.from_numpy(extract_patches(x, r, c, p)) for x in padded))
    assert float((w == 1).float().mean()) > 0.85


def _net_and_pixels(adaptive: bool):
    spec, sar, labels = _two_classes(h=12, w=12, noise=0.2)
    rng = np.random.default_rng(0)
    idx = rng.permutation(144)[:40]
    feat = rng.normal(0, 1, (3, 12, 12)).astype(np.float32)
    tr = (idx // 12, idx % 12, labels.ravel()[idx])
    net, _ = fit_bdgf(spec, sar, feat, tr, None, 2, BDGFConfig(**CFG, adaptive=adaptive))
    return net, spec, sar, feat, tr


def test_training_calibrates_tau_and_the_model_file_keeps_it(tmp_path) -> None:
    net, spec, sar, feat, tr = _net_and_pixels(True)
    want = calibrate([spec, sar], tr[0], tr[1])
    np.testing.assert_allclose(net.edge.tau.numpy(), want)
    tensors = {f"net.{k}": v.numpy() for k, v in net.state_dict().items()}
    path = save_model(tmp_path / "m.bdgf", "bdgf", tensors, {"network": net.meta()})
    loaded, meta = load_model(path)
    twin = BDGFNet.from_meta(meta["network"])
    twin.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in loaded.items()})
    twin.eval()
    np.testing.assert_allclose(twin.edge.tau.numpy(), want)
    x = [torch.randn(5, 6, 5, 5), torch.randn(5, 2, 5, 5), torch.randn(5, 3, 5, 5)]
    torch.testing.assert_close(twin(*x).logits, net(*x).logits)


def test_the_switch_changes_training_and_old_files_stay_without_it() -> None:
    on, *_ = _net_and_pixels(True)
    off, *_ = _net_and_pixels(False)
    assert off.edge is None and on.edge is not None
    x = [torch.randn(5, 6, 5, 5), torch.randn(5, 2, 5, 5), torch.randn(5, 3, 5, 5)]
    assert not torch.allclose(on(*x).logits, off(*x).logits)
    cfg = BDGFConfig(adaptive=True).to_dict()
    del cfg["adaptive"]  # a model file from before the switch
    assert LEGACY["adaptive"] is False and BDGFConfig.from_dict(cfg).adaptive is False


def test_block_prediction_equals_per_patch_prediction() -> None:
    """The shared first layers (patchconv) must fall back to per-patch work on pulled patches."""
    net, spec, sar, feat, _ = _net_and_pixels(True)
    p = 5
    padded = [pad_reflect(im, p) for im in (spec, sar, feat)]
    probs = predict_block(net, *padded, p, batch_size=16)
    want = predict_pixels(net, spec, sar, feat, np.arange(144), p).T.reshape(2, 12, 12)  # the per-patch path
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-5)


def test_train_flag_reaches_the_config() -> None:
    from bdgf_core.cli import build_parser

    base = ["train", "--spectral", "s.tif", "--sar", "a.tif", "--groundtruth", "g.gpkg", "--model", "m.bdgf"]
    assert build_parser().parse_args([*base, "--adaptive"]).adaptive is True
    assert build_parser().parse_args([*base, "--no-adaptive"]).adaptive is False
    assert build_parser().parse_args(base).adaptive is None


@pytest.mark.parametrize("p", [1, 3])
def test_small_patches_work(p: int) -> None:
    edge = EdgeAwarePatch()
    s, a = torch.randn(4, 6, p, p), torch.randn(4, 2, p, p)
    ps, pa, _ = edge(s, a, None)
    torch.testing.assert_close(ps[..., p // 2, p // 2], s[..., p // 2, p // 2])
