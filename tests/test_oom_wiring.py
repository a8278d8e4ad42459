"""The out-of-memory retry where the work happens: training steps (micro-batches, one optimiser step
per batch), validation and pixel prediction, block prediction for Classify, and diffusion feature
extraction (smaller sub-tiles, no seams). A CPU stand-in raises torch.cuda.OutOfMemoryError when a
call is larger than a capacity, as a GPU would."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bdgf_core.bdgf_model import BDGFPredictor
from bdgf_core.diffusion import DiffusionConfig, extract_features_array, pretrain_ddpm
from bdgf_core.diffusion import unet as unet_mod
from bdgf_core.errors import BdgfError
from bdgf_core.network import BDGFConfig
from bdgf_core.network.bdgf import BDGFNet
from bdgf_core.training import fit_bdgf, micro_spans, predict_pixels
from test_training import CFG, _scene


class Capacity:
    """Wraps a forward: calls with more than ``cap`` samples (or pixels) raise a GPU out-of-memory."""

    def __init__(self, forward, cap: int, size=lambda args: args[1].shape[0], when=lambda self: True) -> None:
        self.forward, self.cap, self.size, self.when = forward, cap, size, when
        self.sizes: list[int] = []
        self.failures = 0

    def install(self, monkeypatch, cls, name: str = "forward") -> "Capacity":
        fake = self

        def forward(*args, **kw):
            n = fake.size(args)
            if fake.when(args[0]):
                if n > fake.cap:
                    fake.failures += 1
                    raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} MiB")
                fake.sizes.append(n)
            return fake.forward(*args, **kw)

        monkeypatch.setattr(cls, name, forward)
        return self


def test_micro_spans_cover_the_batch_without_single_samples():
    assert micro_spans(16, 16) == [(0, 16)]
    assert micro_spans(16, 8) == [(0, 8), (8, 16)]
    assert micro_spans(9, 4) == [(0, 4), (4, 9)]  # a last span of one joins the one before
    assert micro_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    for n in range(2, 40):
        for m in (2, 3, 5, 8):
            spans = micro_spans(n, m)
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(b - a >= 2 for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def _count_steps(monkeypatch) -> list[int]:
    steps = []
    real = torch.optim.Adam.step

    def step(self, *a, **k):
        steps.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return steps


def test_training_runs_out_of_memory_then_accumulates_micro_batches(monkeypatch):
    spec, sar, feat, tr, va = _scene()
    cfg = BDGFConfig(**CFG)  # batch 16, 36 training pixels: batches of 16, 16, 4 per epoch
    steps = _count_steps(monkeypatch)
    ref, ref_hist = fit_bdgf(spec, sar, feat, tr, va, 3, cfg)
    ref_steps = len(steps)
    assert ref_steps == 3 * 3

    steps.clear()
    gpu = Capacity(BDGFNet.forward, cap=6, when=lambda net: net.training).install(monkeypatch, BDGFNet)
    logs: list[str] = []
    net, hist = fit_bdgf(spec, sar, feat, tr, va, 3, cfg, log=logs.append)
    estimates = [m for m in logs if m.startswith("estimated training time")]  # after epoch 2 (test_training.py)
    assert len(estimates) == 1
    assert [m for m in logs if m not in estimates] == ["training: out of memory at batch 16; retrying with batch 8",
                                                       "training: out of memory at batch 8; retrying with batch 4"]
    assert gpu.failures == 2
    assert len(steps) == ref_steps  # still one optimiser step per batch of 16
    assert sum(gpu.sizes) == 3 * 36  # every training pixel seen once per epoch, none twice
    assert max(gpu.sizes) <= 4
    assert len(hist["loss"]) == 3 and all(np.isfinite(hist["loss"]))
    # Same batches and gradients up to BatchNorm's micro-batch statistics: the losses stay close.
    assert hist["loss"] == pytest.approx(ref_hist["loss"], rel=0.15)
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))


def test_training_fails_clearly_when_even_the_smallest_micro_batch_does_not_fit(monkeypatch):
    spec, sar, feat, tr, va = _scene()
    Capacity(BDGFNet.forward, cap=1, when=lambda net: net.training).install(monkeypatch, BDGFNet)
    with pytest.raises(BdgfError) as err:
        fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**CFG))
    assert str(err.value) == ("out of memory even at batch 2; lower --batch-size (or the memory budget) "
                              "or close other programs")


def test_validation_and_pixel_prediction_retry_with_the_same_answer(monkeypatch):
    spec, sar, feat, tr, va = _scene()
    net, hist = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1}))
    flat = np.arange(spec.shape[1] * spec.shape[2])
    ref = predict_pixels(net, spec, sar, feat, flat, 3, batch_size=64)
    gpu = Capacity(BDGFNet.forward, cap=20).install(monkeypatch, BDGFNet)
    got = predict_pixels(net, spec, sar, feat, flat, 3, batch_size=64)
    assert gpu.failures == 2 and max(gpu.sizes) <= 16  # 64 -> 32 -> 16
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # validation inside training uses the same retry: it completes and measures an accuracy
    _, h2 = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1, "batch_size": 32}))
    assert 0.0 <= h2["val_oa"][0] <= 1.0


def test_block_prediction_lowers_the_batch_once_and_keeps_it(monkeypatch):
    spec, sar, feat, tr, va = _scene()
    net, _ = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1}))
    stats = {k: np.zeros(n, np.float32) for k, n in (("spectral_mean", 5), ("sar_mean", 2))}
    stats.update(spectral_std=np.ones(5, np.float32), sar_std=np.ones(2, np.float32))
    blocks = [np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect") for x in (spec, sar, feat)]
    ref = BDGFPredictor(net, stats, [1, 2, 3], batch_size=64).predict_block(*blocks)
    gpu = Capacity(BDGFNet.forward, cap=40).install(monkeypatch, BDGFNet)
    pred = BDGFPredictor(net, stats, [1, 2, 3], batch_size=128)
    logs: list[str] = []
    pred.log = logs.append
    got = pred.predict_block(*blocks)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert pred.batch_size == 32 and len(logs) == 2 and "classification: out of memory at batch 128" in logs[0]
    failures = gpu.failures
    pred.predict_block(*blocks)
    assert gpu.failures == failures  # the batch that fitted is kept: no second search


@pytest.fixture(scope="module")
def ddpm():
    rng = np.random.default_rng(3)
    spe = (rng.normal(300, 30, (6, 40, 36))).astype(np.float32)
    sar = rng.gamma(4.0, 0.25, (2, 40, 36)).astype(np.float32)
    cfg = DiffusionConfig.from_profile("fast", steps=2, tile=16, batch=2, fit_tiles=2, fit_pixels=400,
                                       feature_channels=4)
    return pretrain_ddpm(spe, sar, None, cfg), spe, sar


def test_feature_extraction_retries_with_smaller_tiles_without_seams(monkeypatch, ddpm):
    model, spe, sar = ddpm
    ref = extract_features_array(model, spe, sar, tile=32)
    # the U-Net's input is (n, 1, bands, h, w): fail when a window is taller than 30 rows
    # (a 32-row tile plus its halo), fit at 16-row tiles
    halo = model.net.receptive_radius_of(max(model.config.layers) + 1)
    gpu = Capacity(unet_mod.UNet3D.decoder_features, cap=16 + 2 * halo, size=lambda a: a[1].shape[-2]
                   ).install(monkeypatch, unet_mod.UNet3D, "decoder_features")
    logs: list[str] = []
    from bdgf_core.diffusion.features import extract_features

    out = np.full((model.output_channels, 40, 36), np.nan, np.float32)

    def write(r0, c0, block):
        out[:, r0:r0 + block.shape[1], c0:c0 + block.shape[2]] = block

    extract_features(model, lambda a, b, c, d: (spe[:, a:b, c:d], sar[:, a:b, c:d]), 40, 36, write, tile=32,
                     log=logs.append)
    assert logs == ["diffusion features: out of memory at batch 32; retrying with batch 16"]
    assert gpu.failures == 1 and max(gpu.sizes) <= 16 + 2 * halo
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
