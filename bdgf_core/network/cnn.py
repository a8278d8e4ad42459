"""CNN-based branch with diffusion-feature fusion (eqs. 11-12)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Pad3d(nn.Module):
    """Zero padding of (N, C, S, p, p): ``spectral`` on the spectral axis, 1 on each spatial side."""

    def __init__(self, spectral: int) -> None:
        super().__init__()
        self.pad = (1, 1, 1, 1, spectral, spectral)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pad)


def _bn_relu3d(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm3d(ch), nn.ReLU())


def _bn_relu2d(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU())


class CNNBranch(nn.Module):
    """Spectral 3-D convs + SAR/diffusion 2-D convs fused by alpha, beta, gamma (eqs. 11-12).

    Input patches spec (N, Bs, p, p), sar (N, Ba, p, p), dif (N, F, p, p); output the map
    f_cnn (N, embed, p, p) (used by the Mamba branch, eq. 24) and its spatial mean (N, embed).

    The 2-D conv of the diffusion features in the first two lines of eq. 11 gives one map per
    3-D channel, broadcast along the spectral axis of the 3-D features (the paper does not say
    how the 2-D and 3-D shapes meet; this keeps the parameter count independent of Bs).

    Without guidance (``guide=False``) the f^dif terms are dropped and alpha, beta, gamma do not
    exist, i.e. eq. 11 with alpha = beta = gamma = 1.
    """

    def __init__(self, spectral_bands: int, sar_bands: int, feature_channels: int, embed: int = 64,
                 guide: bool = True, c1: int = 8, c2: int = 16) -> None:
        super().__init__()
        self.guide = guide
        # Stride 2 along the spectrum halves the 3-D work per layer; padding keeps p x p. The
        # padding is applied by _Pad3d, not by Conv3d: torch 2.13's CPU Conv3d backward with
        # padding=(3,1,1), stride 2 corrupts the heap for 5 bands and p >= 5 (seen here).
        self.w1_3d = nn.Sequential(_Pad3d(3), nn.Conv3d(1, c1, (7, 3, 3), stride=(2, 1, 1)))
        self.w2_3d = nn.Sequential(_Pad3d(2), nn.Conv3d(c1, c2, (5, 3, 3), stride=(2, 1, 1)))
        s1 = (spectral_bands - 1) // 2 + 1
        s2 = (s1 - 1) // 2 + 1
        # w_3^3d spans the whole remaining spectrum: 3-D -> 2-D, so eq. 12 can add it to w_5^2d f^3.
        self.w3_3d = nn.Conv3d(c2, embed, (s2, 1, 1))
        self.w4_2d = nn.Conv2d(sar_bands, embed, 3, padding=1)
        self.w5_2d = nn.Conv2d(embed, embed, 3, padding=1)
        self.w6_2d = nn.Conv2d(embed, embed, 3, padding=1)
        self.act1, self.act2 = _bn_relu3d(c1), _bn_relu3d(c2)
        self.act3, self.act_sum, self.act_out = _bn_relu2d(embed), _bn_relu2d(embed), _bn_relu2d(embed)
        if guide:
            self.w1_2d = nn.Conv2d(feature_channels, c1, 3, padding=1)
            self.w2_2d = nn.Conv2d(feature_channels, c2, 3, padding=1)
            self.w3_2d = nn.Conv2d(feature_channels, embed, 3, padding=1)
            # Trainable scalars of eq. 11, unconstrained as in the paper; 0.5 = equal shares.
            self.alpha = nn.Parameter(torch.tensor(0.5))
            self.beta = nn.Parameter(torch.tensor(0.5))
            self.gamma = nn.Parameter(torch.tensor(0.5))

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        x = spec.unsqueeze(1)  # (N, 1, Bs, p, p)
        if self.guide:
            # eq. 11, line 1: f1 = beta w1_3d x_spec + (1 - beta) w1_2d f_dif
            f1 = self.beta * self.w1_3d(x) + (1 - self.beta) * self.w1_2d(dif).unsqueeze(2)
            f1 = self.act1(f1)
            # eq. 11, line 2: f2 = gamma w2_3d f1 + (1 - gamma) w2_2d f_dif
            f2 = self.act2(self.gamma * self.w2_3d(f1) + (1 - self.gamma) * self.w2_2d(dif).unsqueeze(2))
            # eq. 11, line 3: f3 = alpha w4_2d x_sar + (1 - alpha) w3_2d f_dif
            f3 = self.act3(self.alpha * self.w4_2d(sar) + (1 - self.alpha) * self.w3_2d(dif))
        else:  # eq. 11 without the f_dif terms
            f1 = self.act1(self.w1_3d(x))
            f2 = self.act2(self.w2_3d(f1))
            f3 = self.act3(self.w4_2d(sar))
        # eq. 12: f_cnn = w6_2d(w3_3d f2 + w5_2d f3)
        s = self.act_sum(self.w3_3d(f2).squeeze(2) + self.w5_2d(f3))
        fmap = self.act_out(self.w6_2d(s))
        return fmap, fmap.mean(dim=(2, 3))
