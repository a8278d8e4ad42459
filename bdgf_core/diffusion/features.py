"""Diffusion features over a whole scene, tile by tile, without seams (SpectralDiff-style).

For each configured timestep t: one noising step q(x_t | x_0) (eq. 8, no masking, BatchNorm in
eval mode) and one U-Net forward; no reverse sampling. The features are the decoder's
concatenations (upsampled + skip).

Reduction (memory-bounded, documented in the model metadata):
1. each decoder feature (C_k, S_k, h, w) is averaged over its spectral axis -> C_k channels;
   concatenated over layers and timesteps -> D raw channels (224 per timestep with the default
   widths, 1344 for the six default timesteps);
2. a linear projection fitted on a sample of pixels from a few random tiles (``fit_projection``;
   pre-training does it on the training scene and the model file keeps it): standardise each
   raw channel, project on the top ``feature_channels`` principal components, whiten (unit
   variance), as SpectralDiff's PCA with whitening. It is then applied streaming, tile by tile.

No seams. Each tile is computed on a window grown by ``halo`` >= the network's receptive radius
on every side, and image borders are reflect-padded by the same rule for every tile, so a pixel's
features are a function of its (reflect-padded) neighbourhood only. The noise is drawn from
generators seeded by (seed, t, noise block) on a fixed global grid of 32 x 32 blocks, so every
pixel gets the same noise whatever the tiling. Tiled and single-tile extraction then agree up
to float rounding.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..errors import BdgfError, Cancelled
from .forward import q_sample, sample_speckle, speckle_shape
from .pretrain import DiffusionModel, Progress

ReadWindow = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
WriteBlock = Callable[[int, int, np.ndarray], None]

_NOISE_BLOCK = 32
_FIT_TILE = 64


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into [0, n) without repeating the edge (numpy's 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m >= n, period - m, m)


def _read_padded(read_window: ReadWindow, height: int, width: int, r0: int, r1: int, c0: int, c1: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Raw (spectral, sar) for rows [r0, r1) x cols [c0, c1), which may reach outside the image."""
    rows, cols = _reflect(np.arange(r0, r1), height), _reflect(np.arange(c0, c1), width)
    a, b, c, d = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    spe, sar = read_window(a, b, c, d)
    spe, sar = np.asarray(spe), np.asarray(sar)
    if spe.shape[1:] != (b - a, d - c) or sar.shape[1:] != (b - a, d - c):
        raise BdgfError(f"read_window({a}, {b}, {c}, {d}) returned {spe.shape} and {sar.shape}")
    rr, cc = rows - a, cols - c
    return spe[:, rr][:, :, cc], sar[:, rr][:, :, cc]


def _block_seed(seed: int, t: int, bi: int, bj: int) -> int:
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, t, bi + 2 ** 31, bj + 2 ** 31])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _window_noise(model: DiffusionModel, t: int, r0: int, r1: int, c0: int, c1: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gaussian eps (C, h, w) and accumulated speckle (n_sar, h, w) for a window, in global coordinates."""
    nb, C, n_sar = _NOISE_BLOCK, model.n_bands, model.n_sar
    speckle = model.config.speckle and n_sar > 0
    eps = torch.empty((C, r1 - r0, c1 - c0))
    gam = torch.empty((n_sar, r1 - r0, c1 - c0)) if speckle else None
    k = speckle_shape(model.schedule.alpha_bar[t - 1], model.config.speckle_scale)
    for bi in range(r0 // nb, (r1 - 1) // nb + 1):
        for bj in range(c0 // nb, (c1 - 1) // nb + 1):
            g = torch.Generator().manual_seed(_block_seed(model.config.seed, t, bi, bj))
            e = torch.randn((C, nb, nb), generator=g)
            ra, rb = max(r0, bi * nb), min(r1, (bi + 1) * nb)
            ca, cb = max(c0, bj * nb), min(c1, (bj + 1) * nb)
            src = (slice(ra - bi * nb, rb - bi * nb), slice(ca - bj * nb, cb - bj * nb))
            dst = (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
            eps[(slice(None),) + dst] = e[(slice(None),) + src]
            if gam is not None:
                s = sample_speckle(k, (n_sar, nb, nb), g)  # eq. 5 with L = k_t
                gam[(slice(None),) + dst] = s[(slice(None),) + src]
    return eps, gam


@torch.no_grad()
def _tile_raw_features(model: DiffusionModel, read_window: ReadWindow, height: int, width: int,
                       r0: int, r1: int, c0: int, c1: int, halo: int, device: str) -> torch.Tensor:
    """Raw pooled decoder features (D, r1 - r0, c1 - c0) of one tile, computed with a halo."""
    a, b, c, d = r0 - halo, r1 + halo, c0 - halo, c1 + halo
    spe, sar = _read_padded(read_window, height, width, a, b, c, d)
    x0 = torch.from_numpy(model.scale(spe, sar))[None].to(device)
    speckle_c = model.config.speckle_scale if model.config.speckle else None
    crop = (slice(None), slice(halo, halo + r1 - r0), slice(halo, halo + c1 - c0))
    out = []
    for t in model.config.timesteps:
        eps, gam = _window_noise(model, t, a, b, c, d)
        tt = torch.full((1,), t, dtype=torch.long, device=device)
        x_t, _ = q_sample(x0, tt, model.n_sar, model.schedule, speckle_c, eps=eps[None].to(device),
                          gamma=None if gam is None else gam[None].to(device))  # eq. 8, one step
        for f in model.net.decoder_features(model.net_input(x_t), tt):
            out.append(f[0].mean(dim=1)[crop])  # average over the spectral axis
    return torch.cat(out).float()


def _project(model: DiffusionModel, raw: torch.Tensor) -> torch.Tensor:
    if model.projection is None:
        return raw
    p = {k: torch.as_tensor(v, dtype=torch.float32, device=raw.device) for k, v in model.projection.items()}
    z = (raw - p["mean"][:, None, None]) / p["std"][:, None, None]
    return torch.einsum("dhw,df->fhw", z, p["components"])


def _prepare(model: DiffusionModel, halo: int | None, device: str) -> int:
    model.net.to(device)
    model.net.eval()  # BatchNorm uses its running statistics: per-pixel results, tiling-independent
    halo = model.net.receptive_radius if halo is None else int(halo)
    if halo < 0:
        raise ValueError("halo must be >= 0")
    return halo


def fit_projection(model: DiffusionModel, read_window: ReadWindow, height: int, width: int,
                   valid: np.ndarray | None = None, halo: int | None = None, device: str = "cpu",
                   progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> None:
    """Fit the standardise + PCA-whitening projection on pixels sampled from random tiles; sets model.projection."""
    cfg = model.config
    halo = _prepare(model, halo, device)
    model.projection = None
    rng = np.random.default_rng(cfg.seed + 1)
    th, tw = min(_FIT_TILE, height), min(_FIT_TILE, width)
    n_tiles = max(1, cfg.fit_tiles)
    per_tile = max(1, math.ceil(cfg.fit_pixels / n_tiles))
    samples = []
    for i in range(n_tiles):
        if cancelled is not None and cancelled():
            raise Cancelled()
        r0, c0 = int(rng.integers(0, height - th + 1)), int(rng.integers(0, width - tw + 1))
        ok = np.ones((th, tw), bool) if valid is None else np.asarray(valid, bool)[r0:r0 + th, c0:c0 + tw]
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        pick = rng.choice(cand, min(per_tile, cand.size), replace=False)
        raw = _tile_raw_features(model, read_window, height, width, r0, r0 + th, c0, c0 + tw, halo, device)
        samples.append(raw.reshape(raw.shape[0], -1)[:, torch.from_numpy(pick).to(raw.device)].T.double().cpu())
        if progress is not None:
            progress((i + 1) / n_tiles, f"fitting the feature projection: tile {i + 1}/{n_tiles}")
    if not samples:
        raise BdgfError("no valid pixel to fit the diffusion feature projection; give a scene with data")
    X = torch.cat(samples)
    mean = X.mean(0)
    std = X.std(0)
    std = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, torch.ones_like(std))  # constant channels
    Z = (X - mean) / std
    cov = Z.T @ Z / max(Z.shape[0] - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0), vecs.flip(1)  # largest variance first
    F = min(cfg.feature_channels, X.shape[1], max(X.shape[0] - 1, 1))
    V = vecs[:, :F]
    sign = torch.sign(V[V.abs().argmax(0), torch.arange(F)])  # deterministic sign: largest loading > 0
    V = V * torch.where(sign == 0, torch.ones_like(sign), sign)
    lam = vals[:F].clamp_min(1e-6 * float(vals[0].clamp_min(1e-12)))  # whitening, floored for rank deficit
    model.projection = {"mean": mean.float().numpy(), "std": std.float().numpy(),
                        "components": (V / lam.sqrt()).float().numpy()}


def extract_features(model: DiffusionModel, read_window: ReadWindow, height: int, width: int,
                     write_block: WriteBlock, tile: int = 64, halo: int | None = None, device: str = "cpu",
                     progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> dict:
    """Compute the features of a height x width scene, tile by tile; returns model.feature_info().

    read_window(row0, row1, col0, col1) returns raw (spectral, sar) arrays of an in-image window;
    write_block(row0, col0, block) receives each finished (F, h, w) float32 block. halo defaults to
    the network's receptive radius. Fits the projection first if the model has none and
    ``feature_channels`` > 0 (save the model afterwards to keep it).
    """
    if tile < 1 or height < 1 or width < 1:
        raise ValueError("tile, height and width must be positive")
    halo = _prepare(model, halo, device)
    if model.projection is None and model.config.feature_channels > 0:
        fit_projection(model, read_window, height, width, halo=halo, device=device, cancelled=cancelled)
    corners = [(r, c) for r in range(0, height, tile) for c in range(0, width, tile)]
    for i, (r0, c0) in enumerate(corners):
        if cancelled is not None and cancelled():
            raise Cancelled()
        r1, c1 = min(r0 + tile, height), min(c0 + tile, width)
        raw = _tile_raw_features(model, read_window, height, width, r0, r1, c0, c1, halo, device)
        write_block(r0, c0, _project(model, raw).cpu().numpy().astype(np.float32, copy=False))
        if progress is not None:
            progress((i + 1) / len(corners), f"diffusion features: tile {i + 1}/{len(corners)}")
    return model.feature_info()


def extract_features_array(model: DiffusionModel, spectral: np.ndarray, sar: np.ndarray, tile: int = 64,
                           halo: int | None = None, device: str = "cpu", progress: Progress | None = None,
                           cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """In-memory convenience: raw (Bs, H, W) spectral and (Ba, H, W) SAR -> features (F, H, W) float32."""
    spectral, sar = np.asarray(spectral), np.asarray(sar)
    H, W = spectral.shape[1:]
    if sar.shape[1:] != (H, W):
        raise BdgfError(f"spectral {spectral.shape} and SAR {sar.shape} must share the grid")
    halo = _prepare(model, halo, device)
    if model.projection is None and model.config.feature_channels > 0:
        fit_projection(model, lambda a, b, c, d: (spectral[:, a:b, c:d], sar[:, a:b, c:d]), H, W,
                       halo=halo, device=device, cancelled=cancelled)
    out = np.empty((model.output_channels, H, W), dtype=np.float32)

    def write(r0: int, c0: int, block: np.ndarray) -> None:
        out[:, r0:r0 + block.shape[1], c0:c0 + block.shape[2]] = block

    extract_features(model, lambda a, b, c, d: (spectral[:, a:b, c:d], sar[:, a:b, c:d]), H, W, write,
                     tile=tile, halo=halo, device=device, progress=progress, cancelled=cancelled)
    return out
