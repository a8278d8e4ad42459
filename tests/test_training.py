"""fit_bdgf (seeded, best epoch kept, cancellable) and predict_block (sliding windows)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bdgf_core.errors import BdgfError, Cancelled
from bdgf_core.network import BDGFConfig
from bdgf_core.patches import extract_patches, pad_reflect
from bdgf_core.training import fit_bdgf, predict_block


def _scene(h: int = 14, w: int = 12, bands: int = 5, n: int = 36, classes: int = 3, seed: int = 0):
    """Images whose class is readable from the spectrum, plus train/val pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (h, w))
    spec = rng.normal(0, 0.3, (bands, h, w)).astype(np.float32)
    spec[0] += labels  # class signal in band 0
    sar = rng.normal(0, 1, (2, h, w)).astype(np.float32)
    feat = rng.normal(0, 1, (3, h, w)).astype(np.float32)
    idx = rng.permutation(h * w)
    tr, va = idx[:n], idx[n:n + 24]
    px = lambda i: (i // w, i % w, labels.ravel()[i])  # noqa: E731
    return spec, sar, feat, px(tr), px(va)


CFG = dict(patch=3, embed=16, tokens=2, epochs=3, batch_size=16, milestones=(2,))


def test_same_seed_same_weights_and_history() -> None:
    spec, sar, feat, tr, va = _scene()
    runs = [fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**CFG)) for _ in range(2)]
    (a, ha), (b, hb) = runs
    assert ha["loss"] == hb["loss"] and ha["val_oa"] == hb["val_oa"]
    for (k, va_), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va_, vb), k
    other, _ = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "seed": 1}))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), other.state_dict().values()))


def test_history_schedule_progress_and_best_epoch() -> None:
    spec, sar, feat, tr, va = _scene()
    calls = []
    net, hist = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 4}),
                         progress=lambda f, m: calls.append((f, m)))
    assert len(hist["loss"]) == len(hist["val_oa"]) == 4
    assert hist["lr"] == pytest.approx([4e-4, 4e-4, 2e-4, 2e-4])  # MultiStepLR, factor 0.5 at epoch 2
    assert [f for f, _ in calls] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert "loss" in calls[0][1] and "validation OA" in calls[0][1]
    best = hist["best_epoch"]
    assert hist["val_oa"][best] == max(hist["val_oa"]) == hist["best_val_oa"]
    ties = [e for e, oa in enumerate(hist["val_oa"]) if oa == max(hist["val_oa"])]
    assert hist["val_loss"][best] == min(hist["val_loss"][e] for e in ties) == hist["best_val_loss"]
    assert not net.training
    # The returned weights are those of the best epoch: their validation OA is the best one.
    rows, cols, labels = va
    padded = [pad_reflect(im, 3) for im in (spec, sar, feat)]
    with torch.no_grad():
        logits = net(*(torch.from_numpy(extract_patches(p, rows, cols, 3)) for p in padded)).logits
    assert (logits.argmax(-1).numpy() == labels).mean() == pytest.approx(hist["best_val_oa"])


def test_equal_validation_oa_keeps_the_epoch_of_lower_validation_loss(monkeypatch) -> None:
    """Validation scores as on a clean scene (100 % from the second epoch on): the kept weights are
    those of the tied epoch of lowest validation loss, not of the first to reach 100 % (issue 15:
    that one was barely trained and its errors sat on the class edges)."""
    import copy

    from bdgf_core import training

    script = iter([(0.5, 1.0), (1.0, 0.5), (1.0, 0.2), (1.0, 0.3)])  # (OA, loss) per epoch
    seen = []

    def scripted(net, src, labels, retry):
        seen.append(copy.deepcopy(net.state_dict()))
        return next(script)

    monkeypatch.setattr(training, "_accuracy", scripted)
    spec, sar, feat, tr, va = _scene()
    net, hist = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 4}))
    assert hist["best_epoch"] == 2 and hist["best_val_oa"] == 1.0 and hist["best_val_loss"] == 0.2
    assert hist["val_loss"] == [1.0, 0.5, 0.2, 0.3]
    for k, v in net.state_dict().items():
        assert torch.equal(v, seen[2][k]), k


def test_better_epoch_rule() -> None:
    from bdgf_core.training import better_epoch

    assert better_epoch(0.9, 5.0, 0.8, 0.1)  # higher OA wins whatever the loss
    assert not better_epoch(0.8, 0.01, 0.9, 5.0)
    assert better_epoch(0.9, 0.2, 0.9, 0.3) and not better_epoch(0.9, 0.3, 0.9, 0.3)
    assert better_epoch(0.0, 1.0, -1.0, float("inf"))  # the first epoch always counts


def test_training_learns_and_runs_without_validation() -> None:
    spec, sar, feat, tr, _ = _scene(n=48)
    cfg = BDGFConfig(**{**CFG, "epochs": 15, "lr": 3e-3, "milestones": ()})
    net, hist = fit_bdgf(spec, sar, feat, tr, None, 3, cfg)
    assert hist["val_oa"] == [] and hist["best_epoch"] == 14
    assert hist["loss"][-1] < 0.6 * hist["loss"][0], hist["loss"]


def test_cancel_raises() -> None:
    spec, sar, feat, tr, va = _scene()
    with pytest.raises(Cancelled):
        fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**CFG), cancelled=lambda: True)


def test_bad_inputs_are_reported() -> None:
    spec, sar, feat, (r, c, y), _ = _scene()
    with pytest.raises(BdgfError, match="labels"):
        fit_bdgf(spec, sar, feat, (r, c, y + 5), None, 3, BDGFConfig(**CFG))
    with pytest.raises(BdgfError, match="outside"):
        fit_bdgf(spec, sar, feat, (r + 100, c, y), None, 3, BDGFConfig(**CFG))
    with pytest.raises(BdgfError, match="diffusion"):
        fit_bdgf(spec, sar, None, (r, c, y), None, 3, BDGFConfig(**CFG))


@pytest.mark.parametrize("patch", [5, 1])
def test_predict_block_equals_per_pixel_prediction(patch: int) -> None:
    spec, sar, feat, tr, va = _scene(h=9, w=7)
    net, _ = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "patch": patch, "epochs": 1}))
    padded = [pad_reflect(im, patch) for im in (spec, sar, feat)]
    probs = predict_block(net, *padded, patch, batch_size=10)  # 63 pixels: batches of 10 and a rest
    assert probs.shape == (3, 9, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    rows, cols = np.divmod(np.arange(63), 7)
    with torch.no_grad():
        for r, c in [(0, 0), (4, 3), (8, 6), (2, 5)]:  # corners and inside, one pixel at a time
            one = [torch.from_numpy(extract_patches(p, np.array([r]), np.array([c]), patch)) for p in padded]
            want = torch.softmax(net(*one).logits, -1)[0].numpy()
            np.testing.assert_allclose(probs[:, r, c], want, rtol=1e-4, atol=1e-5)
        allp = [torch.from_numpy(extract_patches(p, rows, cols, patch)) for p in padded]
        want = torch.softmax(net(*allp).logits, -1).numpy().T.reshape(3, 9, 7)
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-5)
    # A sub-block with its halo gives the same probabilities as the whole image there.
    part = predict_block(net, *(p[:, 2:2 + 4 + patch - 1, 1:1 + 3 + patch - 1] for p in padded), patch)
    np.testing.assert_allclose(part, probs[:, 2:6, 1:4], rtol=1e-4, atol=1e-5)


def test_predict_pixels_reports_progress_and_can_be_cancelled() -> None:
    from bdgf_core.training import predict_pixels

    spec, sar, feat, tr, _ = _scene()
    net, _ = fit_bdgf(spec, sar, feat, tr, None, 3, BDGFConfig(**{**CFG, "epochs": 1}))
    seen = []
    flat = np.arange(100)
    probs = predict_pixels(net, spec, sar, feat, flat, 3, batch_size=32, progress=seen.append)
    assert probs.shape == (100, 3) and seen == pytest.approx([0.32, 0.64, 0.96, 1.0])
    with pytest.raises(Cancelled):
        predict_pixels(net, spec, sar, feat, flat, 3, batch_size=32, cancelled=lambda: len(seen) > 4,
                       progress=seen.append)
    assert len(seen) == 5  # stopped after the first batch of the second call


def test_training_time_is_estimated_once_after_the_second_epoch() -> None:
    """A run says, after its second epoch, how long all its epochs will take (from the second epoch's
    rate: the first carries one-time costs); a run of two epochs or fewer has nothing left to estimate."""
    from bdgf_core.training import estimate_training

    spec, sar, feat, tr, va = _scene()
    said: list[str] = []
    fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 4}), log=said.append)
    estimates = [m for m in said if m.startswith("estimated training time")]
    assert len(estimates) == 1 and "4 epochs at" in estimates[0] and "on cpu" in estimates[0]
    said.clear()
    fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 2}), log=said.append)
    assert not [m for m in said if m.startswith("estimated training time")]
    # 10 s for the first epoch, 2 s for the second: 100 epochs are 10 + 99 x 2 s
    assert estimate_training([10.0, 12.0], 100, "cpu").startswith("estimated training time: 3 min (100 epochs at "
                                                                  "2 s/epoch on cpu")
    assert "5000 s/epoch" in estimate_training([6000.0, 11000.0], 30, "cuda:0")
