"""Issue 15's edge switches: the centre-pixel feature, flips / rotations and mixed patches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bdgf_core.augment import EdgePlan, augment_batch, dihedral, far_side_masks, partners
from bdgf_core.network import BDGFConfig, BDGFNet
from bdgf_core.network.bdgf import LEGACY, CentrePixel
from bdgf_core.patches import pad_reflect
from bdgf_core.training import fit_bdgf, predict_block, predict_pixels

SMALL = dict(embed=16, tokens=2)


def _patches(n: int = 12, p: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, p, p, generator=g), torch.randn(n, 2, p, p, generator=g),
            torch.randn(n, 3, p, p, generator=g)]


def test_centre_feature_reads_the_centre_pixel_only() -> None:
    torch.manual_seed(0)
    m = CentrePixel(4 + 2 + 3, 16)
    spec, sar, dif = _patches()
    base = m(spec, sar, dif)
    ring = [x.clone() for x in (spec, sar, dif)]
    for x in ring:
        x[..., 0, :] += 5  # every pixel of the first row, not the centre
    torch.testing.assert_close(m(*ring), base)
    moved = [x.clone() for x in (spec, sar, dif)]
    moved[1][:, :, 2, 2] += 1  # the centre's SAR
    assert (m(*moved) - base).abs().amax(1).min() > 0


def test_centre_joins_the_fused_head_and_round_trips() -> None:
    torch.manual_seed(0)
    net = BDGFNet(4, 2, 3, 3, BDGFConfig(patch=5, centre=True, **SMALL))
    assert net.fused_head.in_features == 4 * 16  # eq. 29 with f_centre as a fourth input
    assert set(net(*_patches()).branch_logits) == {"cnn", "trans", "mamba"}  # not a mutual-learning branch
    twin = BDGFNet.from_meta(net.meta())
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    torch.testing.assert_close(net(*_patches()).logits, twin(*_patches()).logits)
    # without guidance the centre vector has no diffusion part, and no features are needed
    bare = BDGFNet(4, 2, 0, 3, BDGFConfig(patch=5, centre=True, guide_cnn=False, guide_transformer=False,
                                          guide_mamba=False, **SMALL))
    assert bare.centre.mlp[0].in_features == 6
    assert bare(*_patches()[:2]).logits.shape == (12, 3)


def test_centre_ce_adds_the_centre_heads_cross_entropy() -> None:
    torch.manual_seed(0)
    net = BDGFNet(4, 2, 3, 3, BDGFConfig(patch=5, centre=True, centre_ce=0.5, **SMALL))
    y = torch.arange(12) % 3
    out = net(*_patches())
    total, parts = net.loss(out, y)
    fused_only, _ = net.mutual(out.logits, out.branch_logits, out.branch_features, y)
    want = torch.nn.functional.cross_entropy(net.centre_head(net.centre(*_patches())), y)
    torch.testing.assert_close(total, fused_only + 0.5 * want)
    assert parts["ce_centre"] == pytest.approx(float(want.detach()))
    assert BDGFNet(4, 2, 3, 3, BDGFConfig(patch=5, centre=True, **SMALL)).centre_head is None  # default 0: no head


def test_old_model_files_keep_the_old_network() -> None:
    cfg = BDGFConfig(patch=5, centre=True, flips=True, mix_share=0.5, **SMALL).to_dict()
    for k in LEGACY:
        del cfg[k]  # a model file written before the edge switches
    old = BDGFConfig.from_dict(cfg)
    assert (old.centre, old.centre_ce, old.flips, old.mix_share) == (False, 0.0, False, 0.0)
    assert BDGFNet(4, 2, 3, 3, old).centre is None
    with pytest.raises(ValueError, match="mixed-patch share"):
        BDGFConfig(mix_share=1.5)


def test_dihedral_keeps_the_centre_and_moves_all_inputs_alike() -> None:
    spec, sar, dif = _patches(n=8)
    k = np.arange(8)
    out = dihedral([spec, sar, None], k)
    assert out[2] is None
    torch.testing.assert_close(out[0][0], spec[0])  # k = 0: unchanged
    torch.testing.assert_close(out[0][:, :, 2, 2], spec[:, :, 2, 2])
    torch.testing.assert_close(out[1][:, :, 2, 2], sar[:, :, 2, 2])
    assert len({out[0][i, 0].numpy().tobytes() for i in range(8)}) == 8  # eight different arrangements
    torch.testing.assert_close(out[0][1], torch.rot90(spec[1], 1, dims=(-2, -1)))
    torch.testing.assert_close(out[1][5], torch.flip(torch.rot90(sar[5], 1, dims=(-2, -1)), dims=(-1,)))


def test_far_side_masks_miss_the_centre_and_are_never_empty() -> None:
    m = far_side_masks(2000, 9, np.random.default_rng(0))
    assert not m[:, 4, 4].any()
    assert m.reshape(2000, -1).any(1).all()
    assert m[:, 4, 5].any() and m[:, 3, 4].any()  # some lines pass right next to the centre
    assert 0.05 < m.mean() < 0.45  # a half-plane at most, often less


def _pixels(n: int = 40, p: int = 5):
    """Patches of n training pixels, a fetch function for them and their labels (4 classes)."""
    pool = _patches(n=n, p=p)
    return pool, (lambda idx: [x[torch.as_tensor(idx)] for x in pool]), np.arange(n) % 4


def test_mixed_patches_take_the_far_side_from_another_class() -> None:
    pool, fetch, labels = _pixels()
    batch = np.random.default_rng(0).permutation(40)[:32]
    out = augment_batch(fetch(batch), batch, batch, labels, fetch, False, 1.0, (0, 1))
    plan = EdgePlan(batch, labels, 5, 1.0, (0, 1))
    assert plan.mixed.all() and (labels[plan.partner] != labels[batch]).all()
    for x, y in zip(fetch(batch), out):
        torch.testing.assert_close(y[:, :, 2, 2], x[:, :, 2, 2])  # the centre, and so the label, stays
    for i, pix in enumerate(batch):  # beyond the line: the partner's pixels, in every input
        m = torch.as_tensor(plan.masks[i])
        for x, y in zip(pool, out):
            torch.testing.assert_close(y[i][:, m], x[plan.partner[i]][:, m])
            torch.testing.assert_close(y[i][:, ~m], x[pix][:, ~m])
    assert (partners(np.zeros(5, int), np.random.default_rng(0)) == -1).all()  # one class: no partner
    share = EdgePlan(np.arange(40), labels, 5, 0.3, (0, 2)).mixed.mean()
    assert 0.1 < share < 0.5


def test_a_slice_of_the_batch_is_augmented_as_in_the_whole_batch() -> None:
    # what a torchrun process or an out-of-memory micro-batch does with its part of the global batch
    _, fetch, labels = _pixels()
    batch = np.random.default_rng(1).permutation(40)[:24]
    whole = augment_batch(fetch(batch), batch, batch, labels, fetch, True, 0.5, (3, 0, 7))
    for part in (batch[:10], batch[10:]):
        got = augment_batch(fetch(part), part, batch, labels, fetch, True, 0.5, (3, 0, 7))
        rows = [int(np.flatnonzero(batch == i)[0]) for i in part]
        for x, y in zip(whole, got):
            torch.testing.assert_close(y, x[rows])


def test_augment_batch_is_repeatable_and_a_no_op_when_off() -> None:
    _, fetch, labels = _pixels(n=16)
    batch = np.arange(16)
    patches = fetch(batch)
    assert all(u is v for u, v in zip(augment_batch(patches, batch, batch, labels, fetch, False, 0.0, (0,)), patches))
    a = augment_batch(patches, batch, batch, labels, fetch, True, 0.5, (0, 1, 2))
    b = augment_batch(patches, batch, batch, labels, fetch, True, 0.5, (0, 1, 2))
    c = augment_batch(patches, batch, batch, labels, fetch, True, 0.5, (0, 1, 3))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    assert not torch.equal(a[0], c[0])


def _scene(h: int = 12, w: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(w)[None] >= w // 2).astype(int) + (np.arange(h)[:, None] >= h // 2)  # 3 blocks
    spec = rng.normal(0, 0.3, (4, h, w)).astype(np.float32)
    spec[0] += labels
    sar = rng.normal(0, 1, (2, h, w)).astype(np.float32)
    feat = rng.normal(0, 1, (3, h, w)).astype(np.float32)
    idx = rng.permutation(h * w)[:40]
    return spec, sar, feat, (idx // w, idx % w, labels.ravel()[idx])


CFG = dict(patch=5, epochs=2, batch_size=16, milestones=(1,), **SMALL)


def test_training_applies_the_augmentations_repeatably() -> None:
    spec, sar, feat, tr = _scene()
    on = BDGFConfig(**CFG, flips=True, mix_share=0.5, centre=True)
    a, _ = fit_bdgf(spec, sar, feat, tr, None, 3, on)
    b, _ = fit_bdgf(spec, sar, feat, tr, None, 3, on)
    plain, _ = fit_bdgf(spec, sar, feat, tr, None, 3, BDGFConfig(**CFG, centre=True, flips=False, mix_share=0.0))
    wa, wb, wp = (dict(n.state_dict()) for n in (a, b, plain))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed, same augmentations
    assert any(not torch.equal(wa[k], wp[k]) for k in wa)  # the hook is live


def test_predict_block_with_the_centre_feature_equals_per_pixel() -> None:
    spec, sar, feat, tr = _scene()
    net, _ = fit_bdgf(spec, sar, feat, tr, None, 3, BDGFConfig(**{**CFG, "epochs": 1}, centre=True))
    p = 5
    padded = [pad_reflect(im, p) for im in (spec, sar, feat)]
    probs = predict_block(net, *padded, p, batch_size=16)
    want = predict_pixels(net, spec, sar, feat, np.arange(120), p).T.reshape(3, 12, 10)  # the per-patch path
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-5)


def test_train_flags_reach_the_config(capsys) -> None:
    from bdgf_core.cli import build_parser

    base = ["train", "--spectral", "s.tif", "--sar", "a.tif", "--groundtruth", "g.gpkg", "--model", "m.bdgf"]
    a = build_parser().parse_args([*base, "--no-centre", "--flips", "--mix-share", "0.3"])
    assert (a.centre, a.flips, a.mix_share) == (False, True, 0.3)
    a = build_parser().parse_args(base)
    assert (a.centre, a.flips, a.mix_share) == (None, None, None)  # unset: BDGFConfig's defaults
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--mix-share", "1.5"])
    assert "--mix-share" in capsys.readouterr().err


def test_switches_are_written_into_new_model_files() -> None:
    cfg = BDGFConfig(centre=True, flips=True, mix_share=1.0)
    assert BDGFConfig.from_dict(cfg.to_dict()) == cfg  # read back as trained, not as LEGACY
    edge_keys = ("centre", "centre_ce", "flips", "mix_share")  # LEGACY also holds the fidelity fixes' keys
    assert {k: getattr(BDGFConfig(), k) for k in edge_keys} == {k: LEGACY[k] for k in edge_keys}  # off by default
