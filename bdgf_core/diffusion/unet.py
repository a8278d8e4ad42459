"""Denoising 3-D U-Nets on (N, 1, S, h, w): SpectralDiff's and the compact one of the 'fast' profile.

Both take S = merged band count padded to a multiple of 2**levels and halve only the spectral
axis, with conv3d (4,5,5)/(2,1,1)/(1,2,2); the decoder's concatenations (upsampled + skip) are the
diffusion features, deepest first.

- ``SpectralDiffUNet`` ('paper', architecture "spectraldiff"): the denoiser of SpectralDiff
  (Chen et al. 2023), which BDGF builds on, written from its description (NOTES.md). Each encoder
  block: conv3d 3x3x3, ReLU, BatchNorm, the time embedding added per channel, conv3d 3x3x3, ReLU,
  BatchNorm, then the spectral downsampling; the skip is taken *after* the downsampling. No
  middle block: the first decoder concatenation joins the encoder's last output with itself.
  Decoder blocks mirror this with a transposed conv. With widths (16, 32, 64, 128) and a
  32-dimensional time embedding it has 4,299,633 parameters whatever the band count, and its
  features have 256, 128, 64 channels at S/8, S/4, S/2 bands (3328 values per layer for 104 bands).
- ``UNet3D`` ('fast', and 'paper' model files written before, architecture "compact"): one conv
  per block, a middle block, skips taken before the downsampling; features with 2 x width channels
  at S/2**(levels-1) ... S bands.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of the 1-based timesteps t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))  # odd dim: one zero column


class Block(nn.Module):
    """conv3d 3x3x3 + BatchNorm + ReLU, then the time embedding added per channel."""

    def __init__(self, c_in: int, c_out: int, time_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm3d(c_out)
        self.time = nn.Sequential(nn.Linear(time_dim, c_out), nn.ReLU())

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return h + self.time(emb)[:, :, None, None, None]


class UNet3D(nn.Module):
    """Compact spectral U-Net (architecture "compact"); ``widths`` = (first width, ..., bottleneck width)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), time_dim: int = 32) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError("widths needs at least two entries (one downsampling)")
        self.widths = widths
        self.levels = len(widths) - 1
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.ReLU())
        self.time_dim = time_dim
        self.conv_in = nn.Conv3d(1, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(Block(widths[i], widths[i], time_dim) for i in range(self.levels))
        self.downs = nn.ModuleList(
            nn.Conv3d(widths[i], widths[i + 1], (4, 5, 5), stride=(2, 1, 1), padding=(1, 2, 2))
            for i in range(self.levels))
        self.mid = Block(widths[-1], widths[-1], time_dim)
        rev = range(self.levels - 1, -1, -1)
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], (4, 5, 5), stride=(2, 1, 1), padding=(1, 2, 2))
            for i in rev)
        self.up_blocks = nn.ModuleList(Block(2 * widths[i], widths[i], time_dim) for i in rev)
        self.conv_out = nn.Conv3d(widths[0], 1, 1)

    @property
    def band_multiple(self) -> int:
        """The spectral size S must be a multiple of this (one halving per level)."""
        return 2 ** self.levels

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each decoder feature, deepest first (the order they are produced)."""
        return [2 * self.widths[i] for i in range(self.levels - 1, -1, -1)]

    @property
    def feature_strides(self) -> list[int]:
        """Spectral downsampling of each decoder feature, deepest first: its position j stands for
        the input bands j * stride ... (j + 1) * stride - 1."""
        return [2 ** k for k in range(self.levels - 1, -1, -1)]

    @property
    def receptive_radius(self) -> int:
        """Spatial radius (pixels) on which the last decoder feature depends.

        conv_in 1, per level block 1 + down 2, mid 1, per level up 2 + block 1 except the
        last block (the features are taken before it).
        """
        return self.receptive_radius_of(self.levels)

    def receptive_radius_of(self, depth: int) -> int:
        """Spatial radius of the ``depth`` deepest decoder features (depth 1 = the deepest only):
        conv_in 1, encoder 3 per level, mid block 1, then per up conv 2 and per block in between 1."""
        return 1 + 3 * self.levels + 1 + 2 * depth + (depth - 1)

    def _run(self, x: torch.Tensor, t: torch.Tensor, want_output: bool, depth: int | None = None
             ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, S, h, w), got {tuple(x.shape)}")
        if x.shape[2] % self.band_multiple:
            raise ValueError(f"spectral size {x.shape[2]} is not a multiple of {self.band_multiple}")
        emb = self.time_mlp(sinusoidal_embedding(t.to(x.device), self.time_dim))
        h = self.conv_in(x)
        skips = []
        for block, down in zip(self.down_blocks, self.downs):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        feats = []
        for k, (up, block) in enumerate(zip(self.ups, self.up_blocks)):
            h = torch.cat([up(h), skips.pop()], dim=1)
            feats.append(h)
            if not want_output and (k == self.levels - 1 or (depth is not None and k + 1 >= depth)):
                return None, feats  # the last block and conv_out do not feed any feature
            h = block(h, emb)
        return self.conv_out(h), feats

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Noise estimate (N, 1, S, h, w); with return_features also the decoder concatenations."""
        out, feats = self._run(x, t, True)
        return (out, feats) if return_features else out

    def decoder_features(self, x: torch.Tensor, t: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """The decoder's concatenated (upsampled + skip) tensors, deepest first: (N, C_k, S_k, h, w).

        depth: only the ``depth`` deepest ones (the decoder stops there); None = all.
        """
        return self._run(x, t, False, depth)[1]


class SpectralDiffBlock(nn.Module):
    """SpectralDiff's block: two conv3d 3x3x3 (each ReLU then BatchNorm) with the time embedding
    added between them, then the spectral down- (conv) or upsampling (transposed conv)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, up: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.time = nn.Linear(time_dim, c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(c_out)
        resample = nn.ConvTranspose3d if up else nn.Conv3d
        self.resample = resample(c_out, c_out, (4, 5, 5), stride=(2, 1, 1), padding=(1, 2, 2))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.bn1(torch.relu(self.conv1(x)))
        h = h + torch.relu(self.time(emb))[:, :, None, None, None]
        h = self.bn2(torch.relu(self.conv2(h)))
        return self.resample(h)


class SpectralDiffUNet(nn.Module):
    """SpectralDiff's denoiser (architecture "spectraldiff"); see the module docstring."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), time_dim: int = 32) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError("widths needs at least two entries (one downsampling)")
        self.widths = widths
        self.levels = len(widths) - 1
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.ReLU())
        self.conv_in = nn.Conv3d(1, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(SpectralDiffBlock(widths[i], widths[i + 1], time_dim, up=False)
                                   for i in range(self.levels))
        self.ups = nn.ModuleList(SpectralDiffBlock(2 * widths[i + 1], widths[i], time_dim, up=True)
                                 for i in range(self.levels - 1, -1, -1))
        self.conv_out = nn.Conv3d(widths[0], 1, 1)

    @property
    def band_multiple(self) -> int:
        """The spectral size S must be a multiple of this (one halving per level)."""
        return 2 ** self.levels

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each decoder feature, deepest first: 2 x the encoder width of that level."""
        return [2 * self.widths[i + 1] for i in range(self.levels - 1, -1, -1)]

    @property
    def feature_strides(self) -> list[int]:
        """Spectral downsampling of each decoder feature, deepest first (S/8, S/4, S/2 with 3 levels)."""
        return [2 ** (k + 1) for k in range(self.levels - 1, -1, -1)]

    @property
    def receptive_radius(self) -> int:
        """Spatial radius (pixels) on which the last decoder feature depends."""
        return self.receptive_radius_of(self.levels)

    def receptive_radius_of(self, depth: int) -> int:
        """Spatial radius of the ``depth`` deepest decoder features: conv_in 1, per encoder block
        4 (two 3x3x3 convs, one 5x5 resampling), then 4 per decoder block before the next feature."""
        return 1 + 4 * self.levels + 4 * (depth - 1)

    def _run(self, x: torch.Tensor, t: torch.Tensor, want_output: bool, depth: int | None = None
             ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, S, h, w), got {tuple(x.shape)}")
        if x.shape[2] % self.band_multiple:
            raise ValueError(f"spectral size {x.shape[2]} is not a multiple of {self.band_multiple}")
        emb = self.time_mlp(sinusoidal_embedding(t.to(x.device), self.time_dim))
        h = self.conv_in(x)
        skips = []
        for down in self.downs:
            h = down(h, emb)
            skips.append(h)  # after the downsampling, as SpectralDiff
        feats = []
        for k, up in enumerate(self.ups):
            h = torch.cat([h, skips.pop()], dim=1)
            feats.append(h)
            if not want_output and (k == self.levels - 1 or (depth is not None and k + 1 >= depth)):
                return None, feats  # what follows feeds no feature
            h = up(h, emb)
        return self.conv_out(h), feats

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Noise estimate (N, 1, S, h, w); with return_features also the decoder concatenations."""
        out, feats = self._run(x, t, True)
        return (out, feats) if return_features else out

    def decoder_features(self, x: torch.Tensor, t: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """The decoder's concatenations, deepest first: (N, C_k, S_k, h, w); ``depth`` as in UNet3D."""
        return self._run(x, t, False, depth)[1]


#: The denoiser architectures a model file can name (config ``architecture``).
ARCHITECTURES = {"spectraldiff": SpectralDiffUNet, "compact": UNet3D}


def make_denoiser(architecture: str, widths: Sequence[int], time_dim: int) -> nn.Module:
    """The denoiser of a config: SpectralDiffUNet or UNet3D with these widths."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown denoiser architecture {architecture!r}; one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](widths, time_dim)
