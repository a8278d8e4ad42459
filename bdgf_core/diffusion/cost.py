"""What a diffusion model costs: parameters and floating-point operations per pixel.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (nothing is
computed) for a square window, then divided by its pixels; convolutions and matmuls are counted
(2 FLOPs per multiply-add), element-wise operations are not. Per pixel of the window, the counts do
not depend on the window size (same-padded convolutions), so they hold for any tile.

- ``train_flops_per_pixel``: one training step (forward + backward) per pixel of a training tile;
  a step costs ``batch * tile**2`` times that.
- ``feature_flops_per_pixel``: feature extraction per pixel of a computed window, all timesteps
  (the decoder stops at the deepest layer it needs); ``feature_flops_per_output_pixel`` adds the
  halo overhead ((tile + 2 halo) / tile)**2 of the extraction tile.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .unet import make_denoiser

_WINDOW = 16


def unet_flops(widths, time_dim: int, bands: int, depth: int | None = None, train: bool = False,
               architecture: str = "compact") -> int:
    """FLOPs of one U-Net pass over a (1, 1, bands, 16, 16) window (forward + backward if train)."""
    with torch.device("meta"):
        net = make_denoiser(architecture, widths, time_dim)
        x = torch.zeros(1, 1, bands, _WINDOW, _WINDOW, requires_grad=False)
        t = torch.ones(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        if train:
            net.train()
            net(x, t).sum().backward()
        else:
            net.eval()
            with torch.no_grad():
                net.decoder_features(x, t, depth)
    return int(counter.get_total_flops())


def model_cost(model, tile: int | None = None) -> dict:
    """Parameters and FLOPs per pixel of a ``DiffusionModel`` (see the module docstring)."""
    cfg = model.config
    px = _WINDOW * _WINDOW
    depth = max(cfg.layers) + 1
    arch = cfg.architecture
    train = unet_flops(cfg.widths, cfg.time_dim, model.n_padded, train=True, architecture=arch) / px
    feat = unet_flops(cfg.widths, cfg.time_dim, model.n_padded, depth=depth, architecture=arch) / px
    feat *= len(cfg.timesteps)
    tile = int(tile or cfg.tile)
    halo = model.net.receptive_radius_of(depth)
    overhead = ((tile + 2 * halo) / tile) ** 2
    return {"parameters": int(sum(p.numel() for p in model.net.parameters())),
            "denoiser_bands": int(model.n_padded),
            "train_flops_per_pixel": round(train),
            "train_flops_per_step": round(train * cfg.batch * cfg.tile ** 2),
            "feature_flops_per_pixel": round(feat),
            "feature_flops_per_output_pixel": round(feat * overhead),
            "extraction_tile": tile, "halo": int(halo)}
