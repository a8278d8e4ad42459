"""Pre-training: loss falls, seeded resume == uninterrupted run, model file round trip."""
import numpy as np
import pytest
import torch

from bdgf_core.diffusion import DiffusionConfig, DiffusionModel, pretrain_ddpm
from bdgf_core.errors import BdgfError, Cancelled
from bdgf_core.modelfile import read_meta


def _scene(h=40, w=52, seed=0, period=10.0):
    """Smooth synthetic scene: spectral bands follow a few spatial patterns (``period`` pixels per
    radian); SAR is speckled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / period
    base = np.stack([np.sin(yy), np.cos(xx), np.sin(xx + yy)])
    spe = (np.einsum("kb,khw->bhw", rng.normal(size=(3, 6)), base) * 100 + 500).astype(np.float32)
    sar = ((1.5 + base[:2]) * rng.gamma(4.0, 0.25, size=(2, h, w))).astype(np.float32)
    return spe, sar


def _config(**kw):
    base = dict(widths=(4, 8, 8, 16), time_dim=8, tile=16, batch=4, lr=1e-3, steps=40,
                timesteps=(5, 100), feature_channels=8, fit_tiles=3, fit_pixels=1500)
    return DiffusionConfig(**{**base, **kw})


def _weights(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def test_loss_falls():
    spe, sar = _scene()
    losses = []
    pretrain_ddpm(spe, sar, None, _config(feature_channels=0),
                  progress=lambda f, msg: losses.append(float(msg.rsplit(" ", 1)[1])) if "loss" in msg else None)
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:8])


def test_seeded_and_resume_equals_uninterrupted(tmp_path):
    spe, sar = _scene()
    cfg = _config(steps=7, checkpoint_every=2, feature_channels=0)
    ref = _weights(pretrain_ddpm(spe, sar, None, cfg))
    again = _weights(pretrain_ddpm(spe, sar, None, cfg))
    assert all(torch.equal(ref[k], again[k]) for k in ref)  # seeded and repeatable on CPU

    ck = tmp_path / "run.ckpt"
    calls = {"n": 0}

    def cancel_after_five():
        calls["n"] += 1
        return calls["n"] > 5  # cancelled before step 6 (the last periodic checkpoint was step 4)

    with pytest.raises(Cancelled):
        pretrain_ddpm(spe, sar, None, cfg, cancelled=cancel_after_five, checkpoint=str(ck))
    assert read_meta(ck)["checkpoint"]["step"] == 5
    with pytest.raises(BdgfError, match="checkpoint"):
        DiffusionModel.load(ck)  # a checkpoint is not a finished model
    resumed = pretrain_ddpm(spe, sar, None, cfg, checkpoint=str(ck))
    got = _weights(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)

    # a checkpoint from other settings is refused
    with pytest.raises(BdgfError, match="other settings"):
        pretrain_ddpm(spe, sar, None, _config(steps=7, seed=1, feature_channels=0), checkpoint=str(ck))


def test_save_load_round_trip(tmp_path):
    spe, sar = _scene()
    model = pretrain_ddpm(spe, sar, None, _config(steps=5))
    path = model.save(tmp_path / "diff.bdgf")
    meta = read_meta(path)
    assert meta["kind"] == "diffusion" and meta["profile"] == "paper"
    assert meta["n_spectral"] == 6 and meta["n_sar"] == 2 and meta["n_bands_padded"] == 8
    assert meta["model_id"] == model.model_id and len(meta["model_id"]) == 32
    assert meta["features"]["channels"] == 8
    loaded = DiffusionModel.load(path)
    assert loaded.config == model.config and loaded.model_id == model.model_id
    for k, v in model.projection.items():
        np.testing.assert_array_equal(v, loaded.projection[k])
    for k, v in model.scaling.items():
        np.testing.assert_array_equal(v, loaded.scaling[k])
    x = torch.from_numpy(model.scale(spe[:, :8, :8], sar[:, :8, :8]))[None]
    t = torch.tensor([50])
    loaded.net.eval()
    with torch.no_grad():
        assert torch.equal(model.net(model.net_input(x), t), loaded.net(loaded.net_input(x), t))
    other = pretrain_ddpm(spe, sar, None, _config(steps=1, feature_channels=0))
    assert other.model_id != model.model_id


def test_scaling_and_small_scene():
    spe, sar = _scene(h=10, w=12)
    sar_db = (10 * np.log10(sar)).astype(np.float32)  # dB input is detected and linearised
    valid = np.ones((10, 12), bool)
    valid[:3] = False
    model = pretrain_ddpm(spe, sar_db, valid, _config(steps=2, feature_channels=0))
    assert model.scaling["sar_db"].tolist() == [1.0, 1.0]
    x = model.scale(spe, sar_db)
    assert x.shape == (8, 10, 12) and x.dtype == np.float32
    assert x[2:].min() >= -1 and x[2:].max() <= 1  # spectral in [-1, 1]
    assert x[:2].min() >= 0  # SAR positive
    np.testing.assert_allclose(x[:2], np.clip(sar / model.scaling["sar_scale"][:, None, None], 0, 4), rtol=1e-4)
    with pytest.raises(BdgfError):
        model.scale(spe[:3], sar)


def test_cancel_without_checkpoint_raises():
    spe, sar = _scene()
    with pytest.raises(Cancelled):
        pretrain_ddpm(spe, sar, None, _config(steps=5), cancelled=lambda: True)


def test_a_slow_run_checkpoints_by_time_too(tmp_path, monkeypatch):
    """A checkpoint at least every CHECKPOINT_SECONDS whatever checkpoint_every: a signal cancels anywhere,
    so this bounds what a cancel loses (0 s here: every step), and after the last step."""
    from bdgf_core.diffusion import pretrain as pt

    spe, sar = _scene()
    steps = []
    save = pt._save_checkpoint
    monkeypatch.setattr(pt, "_save_checkpoint", lambda path, model, opt, gen, step: (steps.append(step),
                                                                                     save(path, model, opt, gen, step)))
    cfg = _config(steps=4, checkpoint_every=1000, feature_channels=0)
    pretrain_ddpm(spe, sar, None, cfg, checkpoint=str(tmp_path / "a.ckpt"))
    assert steps == [4]  # the last step alone
    steps.clear()
    monkeypatch.setattr(pt, "CHECKPOINT_SECONDS", 0.0)
    pretrain_ddpm(spe, sar, None, cfg, checkpoint=str(tmp_path / "b.ckpt"))
    assert steps == [1, 2, 3, 4]


# Issue 17: the pretraining's total time is estimated from its first measured steps

def test_estimate_from_the_first_steps():
    from bdgf_core.diffusion.pretrain import estimate_pretraining

    est = estimate_pretraining([5.0, 6.0, 7.0], 30000, "cpu")  # the first step carries the warm-up
    assert est["seconds_per_step"] == pytest.approx(1.0) and est["seconds"] == pytest.approx(7.0 + 29997)
    assert est["message"] == "estimated pretraining time: 8.3 h (30000 steps at 1 s/step on cpu)"
    one = estimate_pretraining([200.0], 30000, "cpu")  # one slow step is enough
    assert one["message"] == "estimated pretraining time: 69 days (30000 steps at 200 s/step on cpu)"
    assert "at 1234 s/step" in estimate_pretraining([1234.0], 10, "cpu")["message"]


def test_pretraining_reports_its_estimate_once_after_a_few_steps(monkeypatch):
    from bdgf_core.diffusion import pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "ESTIMATE_SECONDS", 1e9)  # by step count, however loaded the machine
    spe, sar = _scene()
    seen, steps_done = [], []

    def progress(fraction, message):
        if "loss" in message:
            steps_done.append(len(seen))

    pretrain_ddpm(spe, sar, None, _config(steps=6, feature_channels=0), progress=progress, estimate=seen.append)
    assert len(seen) == 1 and seen[0]["steps"] == 6 and seen[0]["seconds_per_step"] > 0
    assert steps_done == [0, 0, 1, 1, 1, 1]  # told after the third step, before the fourth
    assert seen[0]["seconds"] >= seen[0]["seconds_per_step"] * 3


def test_a_slow_first_step_is_enough_for_the_estimate(monkeypatch):
    from bdgf_core.diffusion import pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "ESTIMATE_SECONDS", 0.0)  # every step 'slow': told after the first
    spe, sar = _scene()
    seen = []
    pretrain_ddpm(spe, sar, None, _config(steps=2, feature_channels=0), estimate=seen.append)
    assert len(seen) == 1 and seen[0]["seconds"] == pytest.approx(2 * seen[0]["seconds_per_step"])
