"""Transformer-based branch with spatial-attention tokenisation and cross-attention (eqs. 13-19)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class SpatialTokenizer(nn.Module):
    """Eq. 13: tokens = Soft(W_att . w7_2d x)^T . (W_map . x): (N, C, p, p) -> (N, L, embed).

    The softmax runs over the p*p pixels, so each of the L tokens is an attention-weighted sum
    of the pixels' mapped values (mapping applied to the input itself, as eq. 13 writes).
    """

    def __init__(self, in_ch: int, embed: int, tokens: int, conv_ch: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, conv_ch, 3, padding=1), nn.BatchNorm2d(conv_ch), nn.ReLU())  # w_7^2d
        self.w_att = nn.Parameter(torch.empty(conv_ch, tokens))
        self.w_map = nn.Parameter(torch.empty(in_ch, embed))
        nn.init.xavier_normal_(self.w_att)
        nn.init.xavier_normal_(self.w_map)

    def forward(self, x: Tensor) -> Tensor:
        att = torch.softmax(self.conv(x).flatten(2).transpose(1, 2) @ self.w_att, dim=1)  # (N, P, L) over pixels
        mapped = x.flatten(2).transpose(1, 2) @ self.w_map  # (N, P, embed)
        return att.transpose(1, 2) @ mapped  # eq. 13: (N, L, embed)


class SelfAttention(nn.Module):
    """Eqs. 15-16, single head: F = V Soft(Q K^T / sqrt(d_k)) + f, on (N, T, embed).

    A LayerNorm before the Q/K/V projections (pre-norm) is added for stable training; the
    residual is the un-normalised input as in eq. 16.
    """

    def __init__(self, embed: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed)
        self.qkv = nn.Linear(embed, 3 * embed)  # eq. 15: Q, K, V = FC f

    def forward(self, f: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(f)).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(k.shape[-1]), dim=-1)
        return attn @ v + f  # eq. 16


class ClsCrossAttention(nn.Module):
    """Eqs. 17-18: the class token of one stream queries the patch tokens of another.

    a, b: (N, 1 + T, embed) with the class token first; returns a with its class token replaced
    by V_b Soft(Q_a K_b^T / sqrt(d_k)) + cls_a, patch tokens of a unchanged (the union of eq. 18).
    """

    def __init__(self, embed: int) -> None:
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(embed), nn.LayerNorm(embed)
        self.w_q = nn.Linear(embed, embed)
        self.w_k = nn.Linear(embed, embed)
        self.w_v = nn.Linear(embed, embed)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        cls_a, tok_b = a[:, :1], self.norm_kv(b[:, 1:])
        q, k, v = self.w_q(self.norm_q(cls_a)), self.w_k(tok_b), self.w_v(tok_b)  # eq. 17
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(k.shape[-1]), dim=-1)
        return torch.cat([attn @ v + cls_a, a[:, 1:]], dim=1)  # eq. 18


class TransformerBranch(nn.Module):
    """Transformer-based branch (eqs. 13-19): patches -> f_trans (N, embed).

    Spectral and SAR patches become ``tokens`` tokens each by eq. 13; the diffusion features are
    mapped pixel by pixel by W_2^map (eq. 14), giving p*p tokens. Each stream gets a class token
    and a learned position embedding, then self-attention (16). Spectral and SAR class tokens
    attend to each other's patch tokens (17-18); their sum (the "merged feature") has its class
    token attend to the diffusion patch tokens the same way. The branch output is the sum of
    the three class tokens (19). Without guidance the diffusion stream is dropped from (19).
    """

    def __init__(self, spectral_bands: int, sar_bands: int, feature_channels: int, patch: int,
                 embed: int = 64, tokens: int = 4, guide: bool = True) -> None:
        super().__init__()
        self.guide = guide
        self.tok_spec = SpatialTokenizer(spectral_bands, embed, tokens)  # eq. 13, W_1
        self.tok_sar = SpatialTokenizer(sar_bands, embed, tokens)  # eq. 13 for SAR
        self.cls_spec = nn.Parameter(torch.zeros(1, 1, embed))
        self.cls_sar = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_spec = nn.Parameter(torch.randn(1, tokens + 1, embed) * 0.02)
        self.pos_sar = nn.Parameter(torch.randn(1, tokens + 1, embed) * 0.02)
        self.sa_spec, self.sa_sar = SelfAttention(embed), SelfAttention(embed)
        self.ca_spec, self.ca_sar = ClsCrossAttention(embed), ClsCrossAttention(embed)
        if guide:
            self.w_map_dif = nn.Linear(feature_channels, embed, bias=False)  # eq. 14, W_2^map
            self.cls_dif = nn.Parameter(torch.zeros(1, 1, embed))
            self.pos_dif = nn.Parameter(torch.randn(1, patch * patch + 1, embed) * 0.02)
            self.sa_dif = SelfAttention(embed)
            self.ca_dif = ClsCrossAttention(embed)
        self.norm = nn.LayerNorm(embed)

    def _stream(self, tokens: Tensor, cls: Tensor, pos: Tensor, sa: SelfAttention) -> Tensor:
        f = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + pos
        return sa(f)  # eqs. 15-16

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor] = None) -> Tensor:
        f_spec = self._stream(self.tok_spec(spec), self.cls_spec, self.pos_spec, self.sa_spec)
        f_sar = self._stream(self.tok_sar(sar), self.cls_sar, self.pos_sar, self.sa_sar)
        t_spec = self.ca_spec(f_spec, f_sar)  # eqs. 17-18: spectral cls over SAR tokens
        t_sar = self.ca_sar(f_sar, f_spec)  # ... and SAR cls over spectral tokens
        out = t_spec[:, 0] + t_sar[:, 0]
        if self.guide:
            f_dif = self._stream(self.w_map_dif(dif.flatten(2).transpose(1, 2)),  # eq. 14
                                 self.cls_dif, self.pos_dif, self.sa_dif)
            t_dif = self.ca_dif(t_spec + t_sar, f_dif)  # merged cls over diffusion tokens (17-18)
            out = out + t_dif[:, 0]  # eq. 19
        return self.norm(out)
