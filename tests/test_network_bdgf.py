"""The full BDGF net: outputs, mutual learning (eqs. 25-29), ablation switches, overfitting."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from bdgf_core.network import BDGFConfig, BDGFNet
from bdgf_core.network.mutual import Temperature, tempered_kl

SMALL = dict(embed=16, tokens=2)


def _batch(n: int = 8, bands: int = 6, sar: int = 2, feats: int = 3, p: int = 5, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, bands, p, p, generator=g), torch.randn(n, sar, p, p, generator=g),
            torch.randn(n, feats, p, p, generator=g), torch.randint(0, classes, (n,), generator=g))


@pytest.mark.parametrize("p", [9, 1])
def test_forward_shapes(p: int) -> None:
    torch.manual_seed(0)
    net = BDGFNet(30, 2, 4, 5, BDGFConfig(patch=p, **SMALL))
    spec, sar, dif, _ = _batch(bands=30, feats=4, p=p)
    out = net(spec, sar, dif)
    assert out.logits.shape == (8, 5)
    assert set(out.branch_logits) == set(out.branch_features) == {"cnn", "trans", "mamba"}
    assert all(z.shape == (8, 5) for z in out.branch_logits.values())
    assert all(f.shape == (8, 16) for f in out.branch_features.values())
    assert net.fused_head.in_features == 3 * 16  # eq. 29 concatenation of three branches


def test_state_dict_is_plain_tensors_and_meta_round_trips() -> None:
    torch.manual_seed(0)
    net = BDGFNet(6, 2, 3, 3, BDGFConfig(patch=5, use_transformer=False, milestones=(3, 7), **SMALL))
    sd = net.state_dict()
    assert all(type(v) is torch.Tensor for v in sd.values())
    twin = BDGFNet.from_meta(net.meta())
    twin.load_state_dict(sd)
    assert twin.config == net.config and twin.config.milestones == (3, 7)
    net.eval(), twin.eval()
    spec, sar, dif, _ = _batch()
    torch.testing.assert_close(net(spec, sar, dif).logits, twin(spec, sar, dif).logits)


def test_temperature_is_positive_and_gets_gradients() -> None:
    torch.manual_seed(0)
    net = BDGFNet(6, 2, 3, 3, BDGFConfig(patch=5, **SMALL))
    spec, sar, dif, y = _batch()
    loss, parts = net.loss(net(spec, sar, dif), y)
    loss.backward()
    for name in ("kl_ct", "kl_cm", "kl_tm"):
        assert parts[f"T_{name}"] > 0
        fc = net.mutual.temps[name].fc
        assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0, name
    # Even a strongly negative FC output gives T > 0 (softplus + 1e-6, eq. 27).
    t = Temperature()
    with torch.no_grad():
        t.fc.bias.fill_(-200.0)
    T = t(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3), torch.randn(4, 3))
    assert (T > 0).all()


def test_kl_zero_for_identical_predictions_and_positive_otherwise() -> None:
    z = torch.randn(6, 4)
    T = torch.full((6,), 2.0)
    assert tempered_kl(z, z.clone(), T).abs() < 1e-7
    assert tempered_kl(z, torch.randn(6, 4), T) > 1e-3
    # Direction of eq. 28: KL(p_target || p_student), T^2-scaled, on softened distributions.
    zs, zt = torch.randn(6, 4), torch.randn(6, 4)
    want = 4.0 * F.kl_div(F.log_softmax(zs / 2, -1), F.log_softmax(zt / 2, -1), log_target=True,
                          reduction="batchmean")
    torch.testing.assert_close(tempered_kl(zs, zt, T), want)


def test_mutual_off_is_cross_entropy_of_fused_head() -> None:
    torch.manual_seed(0)
    net = BDGFNet(6, 2, 3, 3, BDGFConfig(patch=5, mutual=False, **SMALL))
    spec, sar, dif, y = _batch()
    out = net(spec, sar, dif)
    loss, parts = net.loss(out, y)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, y))
    assert set(parts) == {"ce"} and len(net.mutual.temps) == 0


def test_at_least_one_branch_and_features_when_guided() -> None:
    with pytest.raises(ValueError):
        BDGFConfig(use_cnn=False, use_transformer=False, use_mamba=False)
    with pytest.raises(ValueError):
        BDGFNet(6, 2, 0, 3, BDGFConfig())
    cfg = BDGFConfig(patch=3, guide_cnn=False, guide_transformer=False, guide_mamba=False, **SMALL)
    net = BDGFNet(6, 2, 0, 3, cfg)  # pixel data without diffusion features
    spec, sar, _, y = _batch(p=3)
    net.loss(net(spec, sar, None), y)[0].backward()


BRANCH_SETS = [c for c in itertools.product([True, False], repeat=3) if any(c)]


@pytest.mark.parametrize("use", BRANCH_SETS, ids=lambda c: "".join("CTM"[i] if u else "-" for i, u in enumerate(c)))
@pytest.mark.parametrize("guide,mutual", [(True, True), (False, True), (True, False)])
def test_every_ablation_builds_and_trains_a_step(use: tuple[bool, bool, bool], guide: bool, mutual: bool) -> None:
    torch.manual_seed(0)
    cfg = BDGFConfig(patch=3, use_cnn=use[0], use_transformer=use[1], use_mamba=use[2], guide_cnn=guide,
                     guide_transformer=guide, guide_mamba=guide, mutual=mutual, **SMALL)
    net = BDGFNet(6, 2, 3, 3, cfg)
    assert set(net.heads) == set(cfg.branches)
    n_pairs = len(cfg.branches) * (len(cfg.branches) - 1) // 2
    spec, sar, dif, y = _batch(p=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss, parts = net.loss(net(spec, sar, dif), y)
    assert sum(k.startswith("kl_") for k in parts) == (n_pairs if mutual else 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_single_guidance_switches() -> None:
    for flag in ("guide_cnn", "guide_transformer", "guide_mamba"):
        cfg = BDGFConfig(patch=3, **{flag: False}, **SMALL)
        net = BDGFNet(6, 2, 3, 3, cfg)
        spec, sar, dif, y = _batch(p=3)
        net.loss(net(spec, sar, dif), y)[0].backward()
    assert BDGFNet(6, 2, 3, 3, BDGFConfig(guide_mamba=False, **SMALL)).mamba.ca_dif is None
    assert BDGFNet(6, 2, 3, 3, BDGFConfig(use_cnn=False, **SMALL)).mamba.ca_cnn is None


def test_full_model_fits_a_small_batch() -> None:
    torch.manual_seed(0)
    net = BDGFNet(8, 2, 3, 3, BDGFConfig(patch=5, embed=32, tokens=2))
    spec, sar, dif, y = _batch(n=16, bands=8, p=5, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        out = net(spec, sar, dif)
        loss, parts = net.loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["ce"])
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    net.eval()
    assert (net(spec, sar, dif).logits.argmax(-1) == y).all()
