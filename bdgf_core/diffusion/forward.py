"""Forward (noising) process of the BDGF diffusion model: paper Section III-A, eqs. 1, 5-9, Alg. 1.

Layout. Spectral and SAR bands are merged along the band axis into ONE tensor (eq. 8), SAR first:
``x0 = [x0_sar (n_sar bands); x0_spe (n_spectral bands)]`` with shape (N, C, h, w). Spectral
bands are scaled to [-1, 1]; SAR bands to positive values (see ``pretrain.DiffusionModel``), so
that multiplicative speckle is meaningful.

Schedule (eq. 1). Linear betas, ``alpha_t = 1 - beta_t``, ``alpha_bar_t = prod_{i<=t} alpha_i``,
t is 1-based (t = 1..T) everywhere in this package.

Spectral part (eqs. 1, 6, 8). ``x_t^spe = sqrt(alpha_bar_t) M_s M_r x0^spe + sqrt(1 - alpha_bar_t) eps``
with eps ~ N(0, I); the network predicts eps (epsilon parametrisation, as SpectralDiff).

SAR part, speckle on (eqs. 5, 8, 9). Eq. 8 writes the accumulated speckle as a product of
per-step gamma variables, ``x_t^sar = sqrt(alpha_bar_t) (prod_{i<=t} n_i) x0^sar``. A product of
independent gammas is not a gamma, so what we implement is this:

* design: the accumulated speckle ``N_t`` has mean 1 and variance ``c (1 - alpha_bar_t)``, i.e. it
  is ``L_t``-look speckle (eq. 5 with I = 1) with ``L_t = k_t = 1 / (c (1 - alpha_bar_t))``. With the
  default c = 1 the image goes from speckle-free (L -> inf at t = 0) to about 1-look, fully
  developed speckle at t = T: the SAR analogue of the Gaussian part reaching pure noise.
* sampling: ``N_t ~ Gamma(shape k_t, scale 1 / k_t)`` drawn directly, in one draw per element.
* relation to eqs. 8-9: with per-step ``n_i ~ Gamma(nu_i, 1/nu_i)`` (mean 1, eq. 5 with L = nu_i) and
  ``1 + 1/nu_i = (1 + c(1 - alpha_bar_i)) / (1 + c(1 - alpha_bar_{i-1}))`` (``per_step_speckle_shapes``),
  the product ``prod_{i<=t} n_i`` has exactly the same mean (1) and variance ``c (1 - alpha_bar_t)``
  as our ``N_t``: the single gamma is the moment-matched form of eq. 8's product. The Markov step
  is ``x_t^sar = sqrt(alpha_t) n_t x_{t-1}^sar``, i.e. eq. 9's ``G(nu_t, sqrt(alpha_t) x_{t-1} / nu_t)``;
  eq. 9's extra factor (1 - alpha_t) in the scale is left out because it contradicts eq. 8
  (it would shrink the mean by (1 - alpha_t) per step).
* network target for the SAR bands: the normalised speckle deviation
  ``(N_t - 1) / sqrt(c (1 - alpha_bar_t)) = (N_t - 1) sqrt(k_t)``, mean 0 and variance 1 like eps,
  so one L1 loss serves both parts.

SAR part, speckle off ("Concatenate Diff" / SpectralDiff early fusion): SAR bands get the
Gaussian noise of eq. 1 like the spectral bands and the target is eps.

Adaptive modality masking (Algorithm 1, eq. 7). ``p = tanh(progress)``, progress in [0, 1], is the
probability of MASKING (removing) an element, so masking grows with training progress as the paper
says (p from 0 to tanh(1) = 0.76); ``min(p, mask_max)`` when a cap is configured.

* sample mask M_s: each sample's whole spectral part is removed (set to 0) with probability p;
  if that would remove the spectral part of every sample in the batch, one sample chosen at
  random keeps its spectral part (so a batch never loses the modality completely; for batches
  of 20 at p = 0.76 this changes the rate by less than 0.01 percentage points).
* structure mask M_r: each single spectral element (1 x 1 x 1: band, row, column) is removed
  independently with probability p.
* masks apply to x0^spe only; SAR is never masked. Masked elements are 0, the middle of the
  spectral range, and they still receive Gaussian noise (eq. 8); the target stays eps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """Linear beta schedule and its cumulative products (eq. 1); index i holds t = i + 1."""

    betas: torch.Tensor  # (T,) float64
    alphas: torch.Tensor  # (T,)
    alpha_bar: torch.Tensor  # (T,)

    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t for 1-based t (any shape), as float32 on t's device."""
        return self.alpha_bar.to(t.device)[t.long() - 1].float()


def linear_schedule(T: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """SpectralDiff's schedule: T linear betas from beta_start to beta_end."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    alphas = 1.0 - betas
    alpha_bar = torch.cumprod(alphas, 0)  # eq. 1: alpha_bar_t = prod alpha_i
    return Schedule(betas, alphas, alpha_bar)


# ---------------------------------------------------------------------------------------------
# Speckle (eqs. 5, 8, 9)

def speckle_shape(alpha_bar_t: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Gamma shape k_t (= looks L_t of eq. 5) of the accumulated speckle: var = 1/k_t = c(1 - alpha_bar_t)."""
    return 1.0 / (c * (1.0 - alpha_bar_t.double())).clamp_min(1e-12)


def per_step_speckle_shapes(schedule: Schedule, c: float = 1.0) -> torch.Tensor:
    """Per-step shapes nu_t of eq. 9 whose product of Gamma(nu_i, 1/nu_i) has var c(1 - alpha_bar_t).

    Var(prod n_i) = prod(1 + 1/nu_i) - 1 for independent mean-1 factors, so each step
    multiplies the second moment by the ratio of consecutive (1 + c(1 - alpha_bar)).
    """
    m2 = 1.0 + c * (1.0 - schedule.alpha_bar)  # second moment of the accumulated speckle
    prev = torch.cat([torch.ones(1, dtype=m2.dtype), m2[:-1]])
    return 1.0 / (m2 / prev - 1.0)


def sample_gamma(shape: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma(shape, scale 1) samples drawn with ``generator`` (Marsaglia-Tsang, exact).

    torch's own gamma sampler ignores generators, which would break seeded, resumable runs.
    Computed in float64 because for large shapes (k ~ 1e4 at t = 1) float32 cancels.
    """
    dev = shape.device
    k = shape.double().reshape(-1)
    boost = k < 1  # Gamma(k) = Gamma(k + 1) * U^(1/k) for k < 1
    a = torch.where(boost, k + 1.0, k)
    d = a - 1.0 / 3.0
    cc = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(k)
    pending = torch.arange(k.numel(), device=dev)
    while pending.numel():
        x = torch.randn(pending.numel(), generator=generator, device=dev, dtype=torch.float64)
        u = torch.rand(pending.numel(), generator=generator, device=dev, dtype=torch.float64)
        v = (1.0 + cc[pending] * x) ** 3
        dp = d[pending]
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + dp - dp * v + dp * torch.log(v.clamp_min(1e-300)))
        out[pending[ok]] = dp[ok] * v[ok]
        pending = pending[~ok]
    if bool(boost.any()):
        idx = boost.nonzero().squeeze(1)
        u = torch.rand(idx.numel(), generator=generator, device=dev, dtype=torch.float64)
        out[idx] = out[idx] * u ** (1.0 / k[idx])
    return out.reshape(shape.shape)


def sample_speckle(k: torch.Tensor, size: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Accumulated speckle N ~ Gamma(k, 1/k) (eq. 5 with I = 1, L = k): mean 1, variance 1/k.

    ``k`` broadcasts against ``size`` (e.g. (N, 1, 1, 1) against (N, B, h, w)).
    """
    kk = k.double().expand(size)
    return (sample_gamma(kk, generator) / kk).float()  # eq. 5: Gamma(L, I/L), I = 1


# ---------------------------------------------------------------------------------------------
# Adaptive modality masking (Algorithm 1, eq. 7)

def mask_probability(progress: float, mask_max: float = 1.0) -> float:
    """Probability of masking an element at training progress in [0, 1] (eq. 7), capped at mask_max."""
    progress = min(max(float(progress), 0.0), 1.0)
    return min(math.tanh(progress), mask_max)  # eq. 7: (e^x - e^-x) / (e^x + e^-x)


def sample_masks(n: int, n_spectral: int, h: int, w: int, p: float,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-masks (1 = keep) for M_s, shape (n,), and M_r, shape (n, n_spectral, h, w).

    Each entry is removed with probability p (eq. 7); M_s keeps at least one sample per batch.
    """
    m_s = (torch.rand(n, generator=generator, device=device) >= p).float()  # eq. 7, M_s = diag(m_s)
    if n > 0 and not bool(m_s.any()) and p < 1.0:
        keep = torch.randint(n, (1,), generator=generator, device=device)
        m_s[keep] = 1.0  # never let a whole batch lose the spectral modality
    m_r = (torch.rand((n, n_spectral, h, w), generator=generator, device=device) >= p).float()  # eq. 7, M_r
    return m_s, m_r


def apply_masks(x0: torch.Tensor, n_sar: int, n_spectral: int, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Return x0 with M_s M_r applied to the spectral bands only (Alg. 1 step 1; eq. 8)."""
    n, _, h, w = x0.shape
    m_s, m_r = sample_masks(n, n_spectral, h, w, p, generator, x0.device)
    out = x0.clone()
    spe = slice(n_sar, n_sar + n_spectral)
    out[:, spe] = x0[:, spe] * m_s[:, None, None, None] * m_r  # eq. 8: M_s M_r x0^spe
    return out


# ---------------------------------------------------------------------------------------------
# q(x_t | x_0)

def q_sample(x0: torch.Tensor, t: torch.Tensor, n_sar: int, schedule: Schedule,
             speckle_scale: float | None = 1.0, eps: torch.Tensor | None = None,
             gamma: torch.Tensor | None = None, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy state x_t and the network's target for merged x0 (N, C, h, w), SAR bands first.

    t: (N,) 1-based. speckle_scale: c of the speckle design, or None for Gaussian SAR noise.
    eps (N, C, h, w) and gamma (N, n_sar, h, w, accumulated speckle) may be given (features
    use position-seeded noise); otherwise they are drawn from ``generator``.
    Returns (x_t, target), both (N, C, h, w).
    """
    n = x0.shape[0]
    ab64 = schedule.alpha_bar.to(x0.device)[t.to(x0.device).long() - 1].view(n, 1, 1, 1)
    ab = ab64.float()
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps  # eqs. 1, 6, 8 (spectral rows)
    target = eps.clone()
    if speckle_scale is not None and n_sar > 0:
        k = speckle_shape(ab64, speckle_scale)  # float64: 1 - alpha_bar_1 ~ 1e-4
        if gamma is None:
            gamma = sample_speckle(k, (n, n_sar) + tuple(x0.shape[2:]), generator)
        x_t[:, :n_sar] = ab.sqrt() * gamma * x0[:, :n_sar]  # eq. 8 (SAR row): sqrt(ab) N_t x0^sar
        target[:, :n_sar] = (gamma - 1.0) * k.sqrt().float()  # normalised speckle deviation
    return x_t, target
