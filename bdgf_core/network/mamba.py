"""Mamba block (eq. 20) built from its parts, and the Mamba-based branch (eqs. 20-24).

mamba-ssm's ``Mamba`` module cannot run on CPU (its slow path still calls the CUDA op), so the
block is assembled here with the same parameter names and initialisation as
``mamba_ssm.modules.mamba_simple.Mamba`` and calls :func:`selective_scan`, which picks the fused
kernel only on CUDA with mamba-ssm installed.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .selective_scan import selective_scan


class MambaBlock(nn.Module):
    """One Mamba mixer: (N, L, d_model) -> (N, L, d_model).

    Eq. 20: F_m = SSM(FC x) * silu(FC x) (in_proj gives the SSM input and the gate z);
    the outer FC of eq. 20 is out_proj, the residual (+) is added by the caller.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Optional[int] = None, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        # Causal depthwise conv: pad d_conv-1 on both sides, keep the first L outputs.
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # mamba-ssm's initialisation: dt_proj bias = softplus^-1 of dt ~ logU[dt_min, dt_max].
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A = -[1..N] per channel, stored as log for positivity.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, L, d_model) -> (N, L, d_model).

        Activations stay (N, L, channels) in memory throughout; the scan gets (N, channels, L)
        views of them (the layout mamba-ssm's API names) and returns the same layout, so no
        element-wise op mixes layouts and no transposed copy is made.
        """
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (N, L, d_inner) each
        u = F.silu(self._causal_conv(u))
        dt, Bm, Cm = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt @ self.dt_proj.weight.t()  # (N, L, d_inner); the bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        y = selective_scan(u.transpose(1, 2), delta.transpose(1, 2), A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                           self.D.float(), z.transpose(1, 2), delta_bias=self.dt_proj.bias.float(),
                           delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))

    def _causal_conv(self, u: Tensor) -> Tensor:
        """Causal depthwise conv of ``conv1d``'s weights along L: (N, L, C) -> (N, L, C).

        Same function as ``conv1d(u^T)[..., :L]`` (left zero padding of d_conv - 1), run as a
        channels-last (N, C, L, 1) 2-D conv with explicit padding: on CPU this avoids the
        transposed copies and the slow grouped Conv1d backward (several times faster here).
        """
        u4 = u.transpose(1, 2).unsqueeze(-1).contiguous(memory_format=torch.channels_last)
        u4 = F.pad(u4, (0, 0, self.d_conv - 1, 0))
        w = self.conv1d.weight.unsqueeze(-1)  # (C, 1, d_conv, 1)
        return F.conv2d(u4, w, self.conv1d.bias, groups=self.d_inner).squeeze(-1).transpose(1, 2)


class BandMamba(nn.Module):
    """Mamba over a band sequence: (N, bands, p, p) -> f_m of the same shape (eq. 20).

    Each band is one token whose features are its p*p spatial values; tokens are embedded to
    ``embed`` dims, mixed by a Mamba block, mapped back to p*p and added to the input
    (the (+) of eq. 20). Keeping the (bands, p, p) layout lets the group attention of
    eqs. 21-24 work on f_m as a 2-D feature map whose channels are the bands.
    """

    def __init__(self, patch: int, embed: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(patch * patch, embed)
        self.norm = nn.LayerNorm(embed)  # not over p*p: for p = 1 that would zero every token
        self.mamba = MambaBlock(embed, d_state=d_state, d_conv=d_conv, expand=expand)
        self.unembed = nn.Linear(embed, patch * patch)

    def forward(self, x: Tensor) -> Tensor:
        n, b, p, _ = x.shape
        tokens = x.reshape(n, b, p * p)
        f = self.unembed(self.mamba(self.norm(self.embed(tokens))))  # eq. 20: FC(F_m)
        return (f + tokens).reshape(n, b, p, p)  # eq. 20: (+) x


class ChannelAttention(nn.Module):
    """Single-channel attention of the group (eqs. 21-23): (N, C_in, p, p) -> (N, C_out, p, p).

    Q, K, V come from 3x3 convs to a common C_out channels, so every member of the group
    contributes the same number of channels to eq. 24 whatever its own width (the "balance").
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(in_ch, out_ch, 3, padding=1)  # w_8^2d
        self.k = nn.Conv2d(in_ch, out_ch, 3, padding=1)  # w_9^2d
        self.v = nn.Conv2d(in_ch, out_ch, 3, padding=1)  # w_10^2d
        self.lam = nn.Parameter(torch.zeros(1))  # lambda of eq. 23; 0 at start as in DANet

    def forward(self, f: Tensor) -> Tensor:
        n, _, p, _ = f.shape
        q, k, v = self.q(f).flatten(2), self.k(f).flatten(2), self.v(f).flatten(2)  # (N, C, P)
        energy = q @ k.transpose(1, 2)  # eq. 21: E = Q K^T, (N, C, C)
        # eq. 22: Soft(E') with E' = max_j E - E. The softmax runs along j, where max_j E is a
        # constant, so Soft(max_j E - E) = Soft(-E) exactly; torch's softmax subtracts the row
        # maximum of -E itself (the same stabilisation), and the amax and its backward are saved.
        attn = torch.softmax(-energy, dim=-1)
        a = attn @ v  # eq. 22: A = V Soft(E'), (N, C, P)
        return (self.lam * a + v).reshape(n, -1, p, p)  # eq. 23: f_CA = lambda A + V


class MambaBranch(nn.Module):
    """Mamba-based branch (eqs. 20-24): patches -> (feature map (N, embed, p, p), vector (N, embed)).

    The group attention of eq. 24 has up to three members: f_m^spec (always), f_m^dif, the
    diffusion features after a Mamba pass of their own (eq. 20 applied to f^dif; only with
    ``guide``), and the CNN branch's f_cnn of eq. 12 (only with ``with_cnn``, i.e. when the CNN
    branch is on; without it the group has one member fewer). ``dif_pass`` False feeds the raw
    diffusion features to the attention instead, as model files written before the pass did.
    """

    def __init__(self, spectral_bands: int, sar_bands: int, feature_channels: int, patch: int, embed: int,
                 guide: bool, with_cnn: bool, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dif_pass: bool = True) -> None:
        super().__init__()
        self.guide, self.with_cnn = guide, with_cnn
        self.spec_mamba = BandMamba(patch, embed, d_state, d_conv, expand)
        self.sar_mamba = BandMamba(patch, embed, d_state, d_conv, expand)
        self.dif_mamba = BandMamba(patch, embed, d_state, d_conv, expand) if guide and dif_pass else None
        self.ca_spec = ChannelAttention(spectral_bands, embed)
        self.ca_dif = ChannelAttention(feature_channels, embed) if guide else None
        self.ca_cnn = ChannelAttention(embed, embed) if with_cnn else None
        members = 1 + int(guide) + int(with_cnn)
        self.w11 = nn.Conv2d(members * embed, spectral_bands, 3, padding=1)  # w_11^2d
        # Output of the branch from f_m^sar and F_GA^spec (end of III-B3): concat + conv.
        self.out = nn.Sequential(nn.Conv2d(spectral_bands + sar_bands, embed, 3, padding=1),
                                 nn.BatchNorm2d(embed), nn.ReLU())

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor] = None,
                cnn_map: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        f_spec = self.spec_mamba(spec)  # eq. 20, (N, Bs, p, p)
        f_sar = self.sar_mamba(sar)  # eq. 20 for SAR, (N, Ba, p, p)
        group = [self.ca_spec(f_spec)]  # eqs. 21-23 per member
        if self.ca_dif is not None:
            f_dif = self.dif_mamba(dif) if self.dif_mamba is not None else dif  # eq. 20 for f^dif: f_m^dif
            group.append(self.ca_dif(f_dif))
        if self.ca_cnn is not None:
            group.append(self.ca_cnn(cnn_map))
        f_ga = self.w11(torch.cat(group, dim=1)) * f_spec + f_spec  # eq. 24
        fmap = self.out(torch.cat([f_ga, f_sar], dim=1))
        return fmap, fmap.mean(dim=(2, 3))
