"""Issue 15's fidelity defects (temperature collapse, branch heads without labels, eq. 24's Mamba pass,
the learning-rate milestones) and issue 16's capped validation subset, with the per-epoch history."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bdgf_core import training
from bdgf_core.network import BDGFConfig, BDGFNet
from bdgf_core.network.mamba import BandMamba, MambaBranch
from bdgf_core.network.mutual import MutualLearning
from bdgf_core.training import fit_bdgf, validation_subset, validation_warnings
from test_training import CFG, _scene


def _disagreeing(n: int = 16, c: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    feats = {b: torch.randn(n, 8, generator=g) for b in ("cnn", "trans")}
    return 3 * torch.randn(n, c, generator=g), 3 * torch.randn(n, c, generator=g), feats


def test_temperature_trained_on_its_own_loss_does_not_collapse() -> None:
    """Trained on the loss it scales, T used to fall towards 0 and take the KL term with it (issue 15)."""
    torch.manual_seed(0)
    za, zb, feats = _disagreeing()
    y = torch.zeros(len(za), dtype=torch.long)
    mutual = MutualLearning(["cnn", "trans"])
    opt = torch.optim.Adam(mutual.temps.parameters(), lr=0.05)
    first = None
    for _ in range(150):
        loss, parts = mutual(za, {"cnn": za, "trans": zb}, feats, y)
        first = parts if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["T_kl_ct"] >= 1.0, parts  # the floor (before the fix: 0.01)
    assert parts["kl_ct"] >= 0.5 * first["kl_ct"], (first, parts)  # mutual learning still on (before: 0.05 of 3.1)


def test_the_kl_term_cannot_lower_itself_through_t_squared() -> None:
    """Two heads sure of different classes: descent on the KL term raises T (softer), never lowers it."""
    n, c = 8, 4
    za, zb = torch.zeros(n, c), torch.zeros(n, c)
    za[:, 0], zb[:, 1] = 5.0, 5.0
    mutual = MutualLearning(["cnn", "trans"])
    feats = {b: torch.randn(n, 8) for b in ("cnn", "trans")}
    _, parts = mutual(za, {"cnn": za, "trans": zb}, feats, torch.zeros(n, dtype=torch.long))
    term = parts["kl_ct"]
    mutual.zero_grad()
    T = mutual.temps["kl_ct"](feats["cnn"], feats["trans"], za, zb)
    from bdgf_core.network.mutual import tempered_kl

    tempered_kl(za, zb, T).backward()
    assert mutual.temps["kl_ct"].fc.bias.grad.item() < 0, "gradient descent would lower T"
    # The value is still eq. 28's: T^2 * KL of the softened distributions.
    t = T.detach()[:, None]
    want = (t[:, 0] ** 2 * F.kl_div(F.log_softmax(za / t, -1), F.log_softmax(zb / t, -1), log_target=True,
                                    reduction="none").sum(-1)).mean()
    assert term == pytest.approx(float(want), rel=1e-5)


def test_branch_heads_get_a_label_signal_and_mutual_off_is_fused_ce_only() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    spec, sar, dif = (torch.randn(6, c, 3, 3, generator=g) for c in (5, 2, 3))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    net = BDGFNet(5, 2, 3, 3, BDGFConfig(patch=3, embed=16, tokens=2))
    out = net(spec, sar, dif)
    loss, parts = net.loss(out, y)
    for b in ("cnn", "trans", "mamba"):
        assert parts[f"ce_{b}"] == pytest.approx(float(F.cross_entropy(out.branch_logits[b], y).detach()), rel=1e-5)
    kl = sum(parts[k] for k in ("kl_ct", "kl_cm", "kl_tm"))
    assert float(loss.detach()) == pytest.approx(parts["ce"] + sum(parts[f"ce_{b}"] for b in ("cnn", "trans", "mamba")) + kl,
                                        rel=1e-5)
    off = BDGFNet(5, 2, 3, 3, BDGFConfig(patch=3, embed=16, tokens=2, mutual=False))
    out = off(spec, sar, dif)
    assert set(off.loss(out, y)[1]) == {"ce"}  # the Table II ablation stays the fused CE alone


def test_eq24_diffusion_member_is_the_mamba_pass_of_the_features() -> None:
    """Eq. 24's f_CA^dif comes from f_m^dif: the diffusion features after a Mamba pass (eq. 20)."""
    torch.manual_seed(0)
    mb = MambaBranch(6, 2, 3, 3, 16, guide=True, with_cnn=False).eval()
    assert isinstance(mb.dif_mamba, BandMamba)
    seen = []
    mb.ca_dif.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    g = torch.Generator().manual_seed(0)
    spec, sar, dif = torch.randn(2, 6, 3, 3, generator=g), torch.randn(2, 2, 3, 3, generator=g), \
        torch.randn(2, 3, 3, 3, generator=g)
    with torch.no_grad():
        mb(spec, sar, dif)
        torch.testing.assert_close(seen[0], mb.dif_mamba(dif))
    assert not torch.allclose(seen[0], dif)
    # Files written before the pass rebuild the old wiring (no dif_mamba, raw features).
    assert MambaBranch(6, 2, 3, 3, 16, guide=True, with_cnn=False, dif_pass=False).dif_mamba is None
    assert BDGFNet(6, 2, 3, 3, BDGFConfig.from_dict({"patch": 3, "embed": 16})).mamba.dif_mamba is None
    assert BDGFNet(6, 2, 3, 3, BDGFConfig(patch=3, embed=16)).mamba.dif_mamba is not None


@pytest.mark.parametrize("epochs,want", [(100, (50, 75)), (30, (15, 22)), (4, (2, 3)), (2, (1,)), (1, ())])
def test_milestones_are_half_and_three_quarters_of_the_epochs(epochs: int, want: tuple) -> None:
    assert BDGFConfig(epochs=epochs).lr_milestones() == want
    assert BDGFConfig(epochs=epochs, milestones=(7,)).lr_milestones() == (7,)  # given ones are kept


def test_a_short_run_decays_and_records_the_loss_terms_per_epoch() -> None:
    spec, sar, feat, tr, va = _scene()
    cfg = BDGFConfig(**{**CFG, "epochs": 4, "milestones": None})
    _, hist = fit_bdgf(spec, sar, feat, tr, va, 3, cfg)
    assert hist["lr"] == pytest.approx([4e-4, 4e-4, 2e-4, 1e-4])  # before: no decay under 50 epochs
    terms = hist["terms"]
    for name in ("ce", "ce_cnn", "ce_trans", "ce_mamba", "kl_ct", "kl_cm", "kl_tm", "T_kl_ct", "T_kl_cm", "T_kl_tm"):
        assert len(terms[name]) == 4, name
    assert all(t >= 1.0 for k in ("T_kl_ct", "T_kl_cm", "T_kl_tm") for t in terms[k])
    assert all(v > 0 for k in ("kl_ct", "kl_cm", "kl_tm") for v in terms[k])
    assert 0 < hist["val_seconds"] < hist["seconds"]


def test_validation_subset_is_fixed_stratified_and_capped() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2, 3], [700, 250, 48, 2])
    rng.shuffle(labels)
    a, b = validation_subset(labels, 100, seed=4), validation_subset(labels, 100, seed=4)
    np.testing.assert_array_equal(a, b)  # same seed, same pixels
    assert not np.array_equal(a, validation_subset(labels, 100, seed=5))
    assert a.size == 100 and np.unique(a).size == 100 and np.all(np.diff(a) > 0)
    counts = np.bincount(labels[a], minlength=4)
    assert counts.tolist() == [70, 25, 4, 1]  # each class its share; the tiny class keeps one
    np.testing.assert_array_equal(validation_subset(labels, None, 0), np.arange(1000))
    np.testing.assert_array_equal(validation_subset(labels, 5000, 0), np.arange(1000))


def test_fit_scores_the_capped_subset_and_reports_its_size() -> None:
    spec, sar, feat, tr, va = _scene()
    _, hist = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1}), val_cap=10)
    assert hist["val_pixels"] == 10 and hist["val_pixels_given"] == 24
    assert all(round(oa * 10) == pytest.approx(oa * 10) for oa in hist["val_oa"])  # OA over 10 pixels


def test_validation_warnings() -> None:
    falling = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
    assert validation_warnings(falling, [0.9, 0.8, 0.8, 0.7, 0.7, 0.7], 0)[0].startswith(
        "validation OA was best at the first epoch")
    both = validation_warnings(falling, [0.5, 0.9, 0.8, 0.7, 0.7, 0.6], 1)
    assert len(both) == 1 and "fell while the training loss fell" in both[0]
    assert validation_warnings(falling, [0.5, 0.6, 0.7, 0.8, 0.85, 0.9], 5) == []
    assert validation_warnings(falling, [], 5) == []


def test_fit_sends_the_warnings_to_the_log(monkeypatch) -> None:
    spec, sar, feat, tr, va = _scene()
    monkeypatch.setattr(training, "validation_warnings", lambda loss, oa, best: [f"best epoch {best}"])
    logged = []
    _, hist = fit_bdgf(spec, sar, feat, tr, va, 3, BDGFConfig(**{**CFG, "epochs": 1}), log=logged.append)
    assert hist["warnings"] == logged == [f"best epoch {hist['best_epoch']}"]


def _save_bdgf(path, net: BDGFNet, version: int | None = None, config: dict | None = None) -> None:
    """A BDGF model file of ``net``; ``version`` / ``config``: the header and config an older writer stored."""
    from bdgf_core.modelfile import save_model

    network = net.meta() if config is None else {**net.meta(), "config": config}
    meta = {"network": network, "classes": [{"code": c + 1, "name": f"c{c}"} for c in range(net.n_classes)]}
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({k: np.zeros(b, np.float32) if k.endswith("mean") else np.ones(b, np.float32)
                    for k, b in (("spectral_mean", 5), ("spectral_std", 5), ("sar_mean", 2), ("sar_std", 2))})
    save_model(path, "bdgf", tensors, meta)
    if version is not None:  # rewrite the header as an older writer would have
        import json

        from safetensors.numpy import load_file, save_file

        from bdgf_core.modelfile import read_meta

        header = read_meta(path)
        header["version"] = version
        save_file(load_file(str(path)), str(path), metadata={"bdgf": json.dumps(header)})


def _probs(predictor, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((c, 4 + 2, 4 + 2)).astype(np.float32) for c in (5, 2, 3)]
    return predictor.predict_block(*blocks)


def test_a_model_with_the_new_options_round_trips_and_old_files_still_load(tmp_path) -> None:
    from bdgf_core.bdgf_model import BDGFPredictor
    from bdgf_core.modelfile import VERSION, load_model

    torch.manual_seed(0)
    cfg = BDGFConfig(patch=3, embed=16, tokens=2, epochs=30, temperature_floor=0.5, branch_ce_weight=0.3)
    net = BDGFNet(5, 2, 3, 3, cfg).eval()
    _save_bdgf(tmp_path / "new.bdgf", net)
    tensors, meta = load_model(tmp_path / "new.bdgf", "bdgf")
    assert meta["version"] == VERSION >= 2
    back = BDGFPredictor.from_file(tensors, meta)
    assert back.net.config == cfg and back.net.config.lr_milestones() == (15, 22)
    assert back.net.mamba.dif_mamba is not None
    direct = BDGFPredictor(net, {k: tensors[k] for k in ("spectral_mean", "spectral_std", "sar_mean", "sar_std")},
                           [1, 2, 3])
    np.testing.assert_allclose(_probs(back), _probs(direct), rtol=1e-5, atol=1e-6)
    # A version-1 file: its config has none of the new keys and its Mamba branch no diffusion Mamba.
    old_cfg = {k: v for k, v in cfg.to_dict().items() if k not in ("temperature_floor", "mamba_dif_pass")}
    old_cfg.update(branch_ce_weight=0.0, milestones=[50, 75])
    old_net = BDGFNet(5, 2, 3, 3, BDGFConfig.from_dict(old_cfg)).eval()
    assert old_net.mamba.dif_mamba is None
    _save_bdgf(tmp_path / "old.bdgf", old_net, version=1, config=old_cfg)
    tensors, meta = load_model(tmp_path / "old.bdgf", "bdgf")
    assert meta["version"] == 1 and "mamba_dif_pass" not in meta["network"]["config"]
    old = BDGFPredictor.from_file(tensors, meta)
    assert old.net.mamba.dif_mamba is None and old.net.config.milestones == (50, 75)
    direct = BDGFPredictor(old_net, back.stats, [1, 2, 3])
    np.testing.assert_allclose(_probs(old), _probs(direct), rtol=1e-5, atol=1e-6)


def test_cli_default_cap_is_the_training_default() -> None:
    from bdgf_core.cli import build_parser

    args = build_parser().parse_args(["train", "--spectral", "s", "--sar", "a", "--groundtruth", "g",
                                      "--class-field", "c", "--model", "m.bdgf"])
    assert args.val_cap == training.VAL_CAP
    from bdgf_core import testsample
    from bdgf_qgis import alg_train

    # the test cap is written in three places (the plugin and the CLI parser load no torch)
    assert args.test_cap == testsample.TEST_CAP == alg_train.TEST_CAP
