"""Diffusion features over a whole scene, tile by tile, without seams (SpectralDiff-style).

For each configured timestep t: one noising step q(x_t | x_0) (eq. 8, no masking, BatchNorm in
eval mode) and one U-Net forward; no reverse sampling. The features are the decoder's
concatenations (upsampled + skip), all of them ('paper') or the levels in ``feature_layers``.

Reduction (memory-bounded, documented in the model metadata):
1. each decoder feature (C_k, S_k, h, w) is averaged over its spectral axis by modality
   (``DiffusionModel.pool_weights``): the positions that stand for SAR bands and those that stand
   for spectral bands apart, the zero padding left out -> 2 C_k channels (SAR, then spectral). The
   merged axis holds a handful of SAR positions among many spectral ones: one plain mean would
   re-impose the spectral dominance that adaptive masking removes (model files written before
   this, feature format 1, keep the plain mean). SpectralDiff keeps the whole axis (C_k x S_k
   values, then PCA); that is 3328 x 3 values per pixel and timestep for 104 bands, too many
   for a memory-bounded projection fit here. Concatenated over layers and timesteps -> D raw
   channels (2 x 448 per timestep with the 'paper' widths, 2 x 48 with 'fast');
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
from collections import Counter
from typing import Callable

import numpy as np
import torch

from ..errors import BdgfError, Cancelled
from ..oom import OomRetry
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
    return _tiles_raw_features(model, read_window, height, width, [(r0, r1, c0, c1)], halo, device)[0]


@torch.no_grad()
def _tiles_raw_features(model: DiffusionModel, read_window: ReadWindow, height: int, width: int,
                        tiles: list[tuple[int, int, int, int]], halo: int, device: str) -> list[torch.Tensor]:
    """Raw pooled decoder features of several tiles (r0, r1, c0, c1), each computed with a halo.

    With ``config.extract_batch`` > 1 the tiles go through the U-Net together as one batch: every
    window is grown to the largest tile's size (reflect padding continues past the image, so the
    pixels of the tile are unchanged) and stacked. BatchNorm is in eval mode, so samples do not
    interact; a batch > 1 lets PyTorch pick oneDNN's convolutions on CPU.
    """
    cfg = model.config
    th = max(r1 - r0 for r0, r1, _, _ in tiles)
    tw = max(c1 - c0 for _, _, c0, c1 in tiles)
    batched = cfg.extract_batch > 1 and len(tiles) > 1
    fmt = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    speckle_c = cfg.speckle_scale if cfg.speckle else None
    layers = cfg.layers
    depth = max(layers) + 1
    pools = {k: model.pool_weights(k).to(device) for k in layers}
    windows, x0s = [], []
    for r0, r1, c0, c1 in tiles:
        if batched:
            r1, c1 = r0 + th, c0 + tw
        a, b, c, d = r0 - halo, r1 + halo, c0 - halo, c1 + halo
        spe, sar = _read_padded(read_window, height, width, a, b, c, d)
        windows.append((a, b, c, d))
        x0s.append(torch.from_numpy(model.scale(spe, sar)).to(device))
    groups = [list(range(len(tiles)))] if batched else [[i] for i in range(len(tiles))]
    per_tile: list[list[torch.Tensor]] = [[] for _ in tiles]
    for t in cfg.timesteps:
        for group in groups:
            x0 = torch.stack([x0s[i] for i in group])
            eps, gam = zip(*(_window_noise(model, t, *windows[i]) for i in group))
            tt = torch.full((len(group),), t, dtype=torch.long, device=device)
            x_t, _ = q_sample(x0, tt, model.n_sar, model.schedule, speckle_c, eps=torch.stack(eps).to(device),
                              gamma=None if gam[0] is None else torch.stack(gam).to(device))  # eq. 8, one step
            feats = model.net.decoder_features(model.net_input(x_t).contiguous(memory_format=fmt), tt, depth)
            for j, i in enumerate(group):
                r0, r1, c0, c1 = tiles[i]
                crop = (slice(None), slice(halo, halo + r1 - r0), slice(halo, halo + c1 - c0))
                for k in layers:
                    f = feats[k][j][(slice(None), slice(None)) + crop[1:]]  # (C_k, S_k, h, w)
                    if cfg.feature_pooling == "mean":  # format 1: exactly the values it always gave
                        per_tile[i].append(f.mean(dim=1))
                        continue
                    pooled = torch.einsum("gs,cshw->gchw", pools[k], f)  # per-modality spectral means
                    per_tile[i].append(pooled.reshape(-1, *pooled.shape[2:]))
    return [torch.cat(f).float() for f in per_tile]


def _project(model: DiffusionModel, raw: torch.Tensor) -> torch.Tensor:
    if model.projection is None:
        return raw
    p = {k: torch.as_tensor(v, dtype=torch.float32, device=raw.device) for k, v in model.projection.items()}
    z = (raw - p["mean"][:, None, None]) / p["std"][:, None, None]
    return torch.einsum("dhw,df->fhw", z, p["components"])


def _prepare(model: DiffusionModel, halo: int | None, device: str) -> int:
    model.net.to(device)
    model.net.eval()  # BatchNorm uses its running statistics: per-pixel results, tiling-independent
    halo = model.net.receptive_radius_of(max(model.config.layers) + 1) if halo is None else int(halo)
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
    picked = []
    for i in range(n_tiles):
        r0, c0 = int(rng.integers(0, height - th + 1)), int(rng.integers(0, width - tw + 1))
        ok = np.ones((th, tw), bool) if valid is None else np.asarray(valid, bool)[r0:r0 + th, c0:c0 + tw]
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            continue
        picked.append(((r0, r0 + th, c0, c0 + tw), rng.choice(cand, min(per_tile, cand.size), replace=False)))
    step = max(1, cfg.extract_batch)
    # A scene no larger than the fit tile has one window, drawn fit_tiles times: each distinct
    # window is computed once and kept until its last draw (same values, same sample order).
    uses = Counter(w for w, _ in picked)
    cache: dict[tuple[int, int, int, int], torch.Tensor] = {}
    for i in range(0, len(picked), step):
        if cancelled is not None and cancelled():
            raise Cancelled()
        group = picked[i:i + step]
        todo = list(dict.fromkeys(w for w, _ in group if w not in cache))
        if todo:
            cache.update(zip(todo, _tiles_raw_features(model, read_window, height, width, todo, halo, device)))
        for w, pick in group:
            raw = cache[w]
            samples.append(raw.reshape(raw.shape[0], -1)[:, torch.from_numpy(pick).to(raw.device)].T.double().cpu())
            uses[w] -= 1
            if not uses[w]:
                del cache[w]
        if progress is not None:
            done = min(i + step, len(picked))
            progress(done / len(picked), f"fitting the feature projection: tile {done}/{len(picked)}")
    if not samples:
        raise BdgfError("no valid pixel to fit the diffusion feature projection; give a scene with data")
    model.projection = projection_from_samples(torch.cat(samples), cfg.feature_channels)


def projection_from_samples(X: torch.Tensor, channels: int) -> dict[str, np.ndarray]:
    """Standardise + PCA-whitening projection fitted on raw feature samples X (n, D) float64."""
    mean = X.mean(0)
    std = X.std(0)
    std = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, torch.ones_like(std))  # constant channels
    Z = (X - mean) / std
    cov = Z.T @ Z / max(Z.shape[0] - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0), vecs.flip(1)  # largest variance first
    F = min(channels, X.shape[1], max(X.shape[0] - 1, 1))
    V = vecs[:, :F]
    sign = torch.sign(V[V.abs().argmax(0), torch.arange(F)])  # deterministic sign: largest loading > 0
    V = V * torch.where(sign == 0, torch.ones_like(sign), sign)
    lam = vals[:F].clamp_min(1e-6 * float(vals[0].clamp_min(1e-12)))  # whitening, floored for rank deficit
    return {"mean": mean.float().numpy(), "std": std.float().numpy(), "components": (V / lam.sqrt()).float().numpy()}


def _spans(n: int, tile: int, balanced: bool) -> list[tuple[int, int]]:
    """[start, end) of the tiles along one axis: tile-sized with a remainder at the end, or
    (balanced, for batched extraction where every tile is computed at the largest size)
    ceil(n / tile) near-equal parts."""
    if not balanced:
        return [(a, min(a + tile, n)) for a in range(0, n, tile)]
    k = -(-n // tile)
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


def extract_features(model: DiffusionModel, read_window: ReadWindow, height: int, width: int,
                     write_block: WriteBlock, tile: int | None = None, halo: int | None = None, device: str = "cpu",
                     progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                     log: Callable[[str], None] | None = None) -> dict:
    """Compute the features of a height x width scene, tile by tile; returns model.feature_info().

    read_window(row0, row1, col0, col1) returns raw (spectral, sar) arrays of an in-image window;
    write_block(row0, col0, block) receives each finished (F, h, w) float32 block. tile defaults to
    the config's ``feature_tile``; halo to the receptive radius of the deepest layer used. Fits
    the projection first if the model has none and ``feature_channels`` > 0 (save the model
    afterwards to keep it).

    Out of memory (GPU): the tiles that failed are computed again as sub-tiles of half the size
    (no seams: a pixel's features do not depend on the tiling), and that size is kept; ``log`` is told.
    """
    tile = model.config.feature_tile if tile is None else int(tile)
    if tile < 1 or height < 1 or width < 1:
        raise ValueError("tile, height and width must be positive")
    halo = _prepare(model, halo, device)
    if model.projection is None and model.config.feature_channels > 0:
        fit_projection(model, read_window, height, width, halo=halo, device=device, cancelled=cancelled)
    step = max(1, model.config.extract_batch)
    rows, cols = _spans(height, tile, step > 1), _spans(width, tile, step > 1)
    corners = [(r, c) for r in rows for c in cols]
    retry = OomRetry(tile, min(tile, 8), device, log, "diffusion features")

    def run(tiles: list[tuple[int, int, int, int]], size: int) -> None:
        if size < tile:  # after an out-of-memory: the same pixels in sub-tiles of at most size
            tiles = [(r0 + a, r0 + b, c0 + c, c0 + d) for r0, r1, c0, c1 in tiles
                     for a, b in _spans(r1 - r0, size, False) for c, d in _spans(c1 - c0, size, False)]
        for k in range(0, len(tiles), step):
            part = tiles[k:k + step]
            raws = _tiles_raw_features(model, read_window, height, width, part, halo, device)
            for (r0, _, c0, _), raw in zip(part, raws):
                write_block(r0, c0, _project(model, raw).cpu().numpy().astype(np.float32, copy=False))

    for i in range(0, len(corners), step):
        if cancelled is not None and cancelled():
            raise Cancelled()
        tiles = [(r0, r1, c0, c1) for (r0, r1), (c0, c1) in corners[i:i + step]]
        retry.run(lambda size: run(tiles, size))
        if progress is not None:
            done = min(i + step, len(corners))
            progress(done / len(corners), f"diffusion features: tile {done}/{len(corners)}")
    return model.feature_info()


def extract_features_array(model: DiffusionModel, spectral: np.ndarray, sar: np.ndarray, tile: int | None = None,
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
