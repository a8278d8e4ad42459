"""Forward process: masking schedule (eq. 7), masks on spectral only, speckle moments, x_t."""
import math

import pytest
import torch

from bdgf_core.diffusion.forward import (apply_masks, linear_schedule, mask_probability,
                                         per_step_speckle_shapes, q_sample, sample_gamma, sample_masks,
                                         sample_speckle, speckle_shape)


def _within(observed: float, expected: float, sigma: float, k: float = 5.0) -> bool:
    return abs(observed - expected) <= k * sigma


def test_mask_probability_is_tanh_of_progress_and_capped():
    for e in (0.0, 0.25, 0.5, 1.0):
        assert mask_probability(e) == pytest.approx(math.tanh(e))
    assert mask_probability(2.0) == pytest.approx(math.tanh(1.0))  # progress clipped to [0, 1]
    assert mask_probability(1.0, mask_max=0.5) == 0.5


@pytest.mark.parametrize("progress", [0.1, 0.4, 0.7, 1.0])
def test_masking_rates_follow_tanh(progress):
    """Fraction of REMOVED entries = tanh(progress) (5 sigma), for M_s and M_r separately."""
    g = torch.Generator().manual_seed(1)
    p = mask_probability(progress)
    n, b, h, w = 4000, 4, 8, 8
    m_s, m_r = sample_masks(n, b, h, w, p, g)
    removed_s = 1.0 - m_s.mean().item()
    removed_r = 1.0 - m_r.mean().item()
    assert _within(removed_s, p, math.sqrt(p * (1 - p) / n) + 1.0 / n)  # +1/n: the keep-one rule
    assert _within(removed_r, p, math.sqrt(p * (1 - p) / m_r.numel()))
    # The rates of the neighbouring schedule points are far outside these bounds.
    assert abs(removed_r - math.tanh(progress - 0.1)) > 0.02


def test_sample_mask_keeps_one_sample():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m_s, _ = sample_masks(3, 2, 2, 2, 0.999, g)
        assert m_s.sum() >= 1


def test_masks_touch_only_spectral_bands():
    g = torch.Generator().manual_seed(2)
    n_sar, n_spe = 3, 5
    x0 = torch.rand(64, n_sar + n_spe, 6, 6) + 0.5  # no zeros before masking
    out = apply_masks(x0, n_sar, n_spe, 0.7, g)
    assert out[:, :n_sar].numpy().tobytes() == x0[:, :n_sar].numpy().tobytes()  # SAR bytes unchanged
    spe_in, spe_out = x0[:, n_sar:], out[:, n_sar:]
    kept = spe_out != 0
    assert torch.equal(spe_out[kept], spe_in[kept])  # spectral elements are kept or zeroed
    assert 0.05 < kept.float().mean().item() < 0.2  # about (1 - 0.7)^2 = 0.09 kept
    whole = (~kept).flatten(1).all(1)
    assert whole.any() and not whole.all()  # some samples lose their whole spectral part


@pytest.mark.parametrize("t", [1, 50, 250, 500])
def test_accumulated_speckle_mean_one_and_designed_variance(t):
    sched = linear_schedule(500, 1e-4, 0.02)
    c = 1.0
    k = speckle_shape(sched.alpha_bar[t - 1], c)
    var = c * (1 - sched.alpha_bar[t - 1].item())
    n = 400_000
    s = sample_speckle(k, (n,), torch.Generator().manual_seed(t)).double()
    assert _within(s.mean().item(), 1.0, math.sqrt(var / n))
    mu4 = var ** 2 * (3 + 6 / k.item())  # gamma fourth central moment
    assert _within(s.var().item(), var, math.sqrt((mu4 - var ** 2) / n))


def test_gamma_sampler_small_shape():
    g = torch.Generator().manual_seed(3)
    k = torch.full((200_000,), 0.5)
    x = sample_gamma(k, g)
    assert (x > 0).all()
    assert _within(x.mean().item(), 0.5, math.sqrt(0.5 / 2e5))


def test_per_step_product_matches_accumulated_moments():
    """Eq. 8's product of per-step Gamma(nu_i, 1/nu_i) has the mean/variance of our single draw."""
    sched = linear_schedule(500, 1e-4, 0.02)
    nu = per_step_speckle_shapes(sched, 1.0)
    assert (nu > 0).all()
    g = torch.Generator().manual_seed(4)
    n, t = 20000, 150
    prod = torch.ones(n, dtype=torch.float64)
    for i in range(t):
        prod *= sample_gamma(nu[i].expand(n), g) / nu[i]
    var = 1.0 - sched.alpha_bar[t - 1].item()
    assert _within(prod.mean().item(), 1.0, math.sqrt(var / n))
    mu4 = ((prod - 1) ** 4).mean().item()
    assert _within(prod.var().item(), var, math.sqrt(max(mu4 - var ** 2, 1e-12) / n))


def test_spectral_x_t_near_T_is_noise_and_near_0_is_data():
    sched = linear_schedule(500, 1e-4, 0.02)
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(8, 6, 16, 16, generator=g) * 2 - 1
    n_sar = 2
    x0[:, :n_sar] = x0[:, :n_sar].abs() + 0.1
    def corr(t):
        x_t, _ = q_sample(x0, torch.full((8,), t), n_sar, sched, 1.0, generator=g)
        a, b = x_t[:, n_sar:].flatten(), x0[:, n_sar:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr(500)) < 0.1  # sqrt(alpha_bar_500) ~ 0.08 times std(x0) ~ 0.58
    assert corr(1) > 0.99


def test_sar_part_and_targets():
    sched = linear_schedule(500, 1e-4, 0.02)
    g = torch.Generator().manual_seed(6)
    n_sar = 2
    x0 = torch.rand(16, 5, 16, 16, generator=g) + 0.5
    t = torch.full((16,), 300)
    x_t, target = q_sample(x0, t, n_sar, sched, 1.0, generator=g)
    ab = sched.alpha_bar[299].item()
    k = 1 / (1 - ab)
    gamma = x_t[:, :n_sar] / (math.sqrt(ab) * x0[:, :n_sar])  # eq. 8: multiplicative only
    torch.testing.assert_close(target[:, :n_sar], (gamma - 1) * math.sqrt(k), atol=1e-4, rtol=1e-4)
    assert abs(target[:, :n_sar].mean().item()) < 0.05 and abs(target[:, :n_sar].std().item() - 1) < 0.05
    eps = (x_t[:, n_sar:] - math.sqrt(ab) * x0[:, n_sar:]) / math.sqrt(1 - ab)
    torch.testing.assert_close(target[:, n_sar:], eps, atol=1e-4, rtol=1e-4)
    # speckle off: SAR bands get Gaussian noise and the target is eps everywhere.
    x_t, target = q_sample(x0, t, n_sar, sched, None, generator=g)
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    torch.testing.assert_close(target, eps, atol=1e-4, rtol=1e-4)
