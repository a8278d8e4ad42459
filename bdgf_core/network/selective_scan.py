"""Selective scan (the S6 recurrence of Mamba) with a fast pure-PyTorch path.

Shapes (as in mamba-ssm): u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L) or grouped
(B, G, N, L) with D divisible by G; D (the skip) and delta_bias: (D,).

    delta = softplus(delta + delta_bias)
    h_l   = exp(delta_l * A) * h_{l-1} + delta_l * B_l * u_l
    y_l   = sum_n h_l[n] * C_l[n] + D * u_l
    out   = y * silu(z)

mamba-ssm's fused CUDA kernel is used only when it imports and the tensors are on CUDA; the
package cannot even be imported on CPU machines (its root imports the compiled extension), so
everything else runs :func:`selective_scan_torch`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

_FUSED: Optional[Callable] = None
_FUSED_TRIED = False
_LOG2E = math.log2(math.e)


def fused_scan_fn() -> Optional[Callable]:
    """mamba-ssm's ``selective_scan_fn`` or None; imported once, any failure means None."""
    global _FUSED, _FUSED_TRIED
    if not _FUSED_TRIED:
        _FUSED_TRIED = True
        try:  # not only ImportError: a broken build raises OSError/RuntimeError on import
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            _FUSED = selective_scan_fn
        except Exception:
            _FUSED = None
    return _FUSED


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """Selective scan -> (B, D, L) in u's dtype; fused kernel on CUDA when available."""
    if u.is_cuda:
        fn = fused_scan_fn()
        if fn is not None:
            return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _expand_groups(M: Tensor, d: int) -> Tensor:
    """(B, N, L) -> (B, 1, N, L); (B, G, N, L) -> (B, D, N, L) by repeating each group."""
    if M.dim() == 3:
        return M.unsqueeze(1)
    return M.repeat_interleave(d // M.shape[1], dim=1)


def _prepare(u: Tensor, delta: Tensor, A: Tensor, delta_bias: Optional[Tensor],
             delta_softplus: bool) -> tuple[Tensor, Tensor, Tensor]:
    # The recurrence runs in at least fp32 (as mamba-ssm does): exp(delta*A) products over long
    # sequences lose too much in bf16/fp16. float64 stays float64 (reference / gradcheck).
    dt = torch.promote_types(u.dtype, torch.float32)
    u, delta = u.to(dt), delta.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A.to(dt)


def _position_major(x: Tensor, k: int, rows: int, cols: int) -> Tensor:
    """(B, ..., L) -> contiguous (L, k, rows, cols): one contiguous slice per position."""
    length = x.shape[-1]
    return x.reshape(k, rows * cols, length).permute(2, 0, 1).reshape(length, k, rows, cols).contiguous()


class _Layout:
    """Sizes and position-major copies of the scan inputs, shared by forward, backward, inference.

    The D channels are split into G groups of D/G sharing one B_l, C_l. A state tile is
    (B, G, N, D/G), seen as (B*G, N, D/G) for the batched products with B_l and C_l: channels
    innermost, so the broadcasts over N and the sums over N run along whole contiguous rows.
    """

    def __init__(self, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> None:
        self.bsz, self.d, self.length = u.shape
        self.n = A.shape[1]
        self.g = Bm.shape[1] if Bm.dim() == 4 else 1
        self.dg, self.k = self.d // self.g, self.bsz * self.g
        self.bc_shape = Bm.shape
        self.tile = (self.bsz, self.g, self.n, self.dg)
        self.A = A.reshape(self.g, self.dg, self.n).transpose(1, 2).unsqueeze(0).contiguous()  # (1, G, N, D/G)
        self.A2 = self.A * _LOG2E
        self.dl = _position_major(delta, self.k, 1, self.dg)  # (L, B*G, 1, D/G)
        self.du = _position_major(delta * u, self.k, 1, self.dg)
        self.Bl = _position_major(Bm, self.k, self.n, 1)  # (L, B*G, N, 1)
        self.Cl = _position_major(Cm, self.k, self.n, 1)
        # Per-position views, made once (indexing inside the loops costs a dispatch per use).
        self.dl_i = self.dl.view(self.length, self.bsz, self.g, 1, self.dg).unbind(0)
        self.du_i, self.B_i, self.C_i = self.du.unbind(0), self.Bl.unbind(0), self.Cl.unbind(0)
        self.Bt_i = self.Bl.transpose(2, 3).unbind(0)  # (B*G, 1, N)
        self.Ct_i = self.Cl.transpose(2, 3).unbind(0)

    def decay(self, i: int, out: Tensor) -> Tensor:
        """exp(delta_i A) into ``out`` (B, G, N, D/G), returned as (B*G, N, D/G)."""
        torch.mul(self.dl_i[i], self.A2, out=out)
        return out.exp2_().view(self.k, self.n, self.dg)

    def channels_last(self, x: Tensor) -> Tensor:
        """Position-major (L, B*G, 1, D/G) -> (B, D, L)."""
        return x.view(self.length, self.bsz, self.d).permute(1, 2, 0)

    def like(self, ref: Tensor, x: Tensor) -> Tensor:
        """Position-major (L, B*G, 1, D/G) -> (B, D, L) laid out in memory like ``ref``.

        A caller that keeps (B, L, D) in memory (a transposed view) gets the same back, so the
        element-wise ops around the scan never mix layouts (slow transposing loops on CPU).
        """
        return torch.empty_like(ref).copy_(self.channels_last(x))

    def states_last(self, x: Tensor) -> Tensor:
        """Position-major (L, B*G, 1, N) -> the shape of B and C ((B, N, L) or (B, G, N, L))."""
        return x.view(self.length, self.k * self.n).t().reshape(self.bc_shape)


def _scan_inference(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
    """Forward only: one running state, read out at each position (no (L, B, D, N) tensor)."""
    s = _Layout(u, delta, A, Bm, Cm)
    a = u.new_empty(s.tile)
    h = torch.mul(s.B_i[0], s.du_i[0])
    y = u.new_empty(s.length, s.k, 1, s.dg)
    y_i = y.unbind(0)
    torch.bmm(s.Ct_i[0], h, out=y_i[0])
    for i in range(1, s.length):
        h.mul_(s.decay(i, a)).addcmul_(s.B_i[i], s.du_i[i])
        torch.bmm(s.Ct_i[i], h, out=y_i[i])
    return s.like(u, y)


class _SelectiveScanFn(torch.autograd.Function):
    """y_l = C_l . h_l of the recurrence, with a hand-written backward (the core of the scan).

    Inputs: u, delta (B, D, L) (delta already biased and softplus'd), A (D, N), Bm, Cm (B, N, L)
    or (B, G, N, L), all of one float dtype. Output y (B, D, L) without the D skip and the gate.

    Autograd over a Python loop records several nodes per position and materialises every
    broadcast product as an (L, B, D, N) tensor; here a position costs 5 kernels forward and 11
    backward on one (B, N, D) state tile, only the states h_l are kept for backward, and the
    sums over N and D are batched matrix products. exp(delta A) is computed as
    exp2(delta (A log2 e)), as mamba-ssm's kernel does (2.5-3x faster than exp on CPU here, the
    same value to a few ulp), and recomputed in backward rather than stored.
    Measured here and not kept (no faster at the branch's sizes, L 2 and 60): the decays of all
    positions in one op, storing them for backward, recomputing the states chunk by chunk from
    checkpoints, splitting the batch; torch.compile of a forward step took 20 s to compile, needs a
    C++ compiler at run time, and gained 15%.

    Backward, with gh_l = dLoss/dh_l = gy_l C_l + exp(delta_{l+1} A) gh_{l+1} (a reverse scan)
    and X_l = gh_l exp(delta_l A) h_{l-1}:
        du_l = delta_l sum_n gh_l B_l              dB_l = sum_d gh_l delta_l u_l
        ddelta_l = u_l sum_n gh_l B_l + sum_n X_l A    dA = sum_{b,l} delta_l X_l
        dC_l = sum_d gy_l h_l
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor) -> Tensor:
        s = _Layout(u, delta, A, Bm, Cm)
        a = u.new_empty(s.tile)  # exp(delta_l A), reused for every position
        H = u.new_empty(s.length, s.k, s.n, s.dg)  # every state, kept for backward
        y = u.new_empty(s.length, s.k, 1, s.dg)
        H_i, y_i = H.unbind(0), y.unbind(0)
        torch.mul(s.B_i[0], s.du_i[0], out=H_i[0])  # h_0 = delta_0 B_0 u_0 (h_{-1} = 0)
        torch.bmm(s.Ct_i[0], H_i[0], out=y_i[0])  # read out while the state is in cache
        for i in range(1, s.length):
            torch.addcmul(s.decay(i, a).mul_(H_i[i - 1]), s.B_i[i], s.du_i[i], out=H_i[i])
            torch.bmm(s.Ct_i[i], H_i[i], out=y_i[i])
        ctx.save_for_backward(u, delta, H)
        ctx.layout = s
        return s.like(u, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Optional[Tensor], ...]:
        u, delta, H = ctx.saved_tensors
        s: _Layout = ctx.layout
        k, g, n, dg, length = s.k, s.g, s.n, s.dg, s.length
        gyl = _position_major(gy.to(H.dtype), k, 1, dg)  # (L, B*G, 1, D/G)
        a = H.new_empty(s.tile)
        x = H.new_empty(s.tile)  # X_l
        xv = x.view(k, n, dg)
        gh, gh_next = H.new_empty(k, n, dg), H.new_empty(k, n, dg)
        gdu = H.new_empty(length, k, 1, dg)  # sum_n gh_l B_l
        gdelta_a = H.new_zeros(length, k, 1, dg)  # sum_n X_l A (0 at l = 0: h_{-1} = 0)
        gB = H.new_empty(length, k, 1, n)  # sum_d gh_l delta_l u_l
        gC = H.new_empty(length, k, 1, n)  # sum_d gy_l h_l
        gA = H.new_zeros(s.tile)  # sum_l delta_l X_l, summed over the batch at the end
        H_i, gy_i, gdu_i, gB_i, gC_i = (t.unbind(0) for t in (H, gyl, gdu, gB, gC))
        gdelta_a_i = gdelta_a.view(length, s.bsz, g, dg).unbind(0)
        torch.mul(s.C_i[-1], gy_i[-1], out=gh)
        for i in range(length - 1, -1, -1):
            torch.bmm(s.Bt_i[i], gh, out=gdu_i[i])
            torch.bmm(s.du_i[i], gh.transpose(1, 2), out=gB_i[i])
            torch.bmm(gy_i[i], H_i[i].transpose(1, 2), out=gC_i[i])
            if i == 0:
                break
            agh = s.decay(i, a).mul_(gh)  # exp(delta_i A) gh_i
            torch.mul(agh, H_i[i - 1], out=xv)  # X_i
            gA.addcmul_(s.dl_i[i], x)
            torch.sum(x.mul_(s.A), dim=2, out=gdelta_a_i[i])
            torch.addcmul(agh, s.C_i[i - 1], gy_i[i - 1], out=gh_next)
            gh, gh_next = gh_next, gh
        gdu = s.channels_last(gdu)
        gu = torch.mul(gdu, delta, out=torch.empty_like(u))
        gdelta = torch.addcmul(s.channels_last(gdelta_a), gdu, u, out=torch.empty_like(delta))
        gA = gA.sum(0).transpose(1, 2).reshape(s.d, n)
        return gu, gdelta, gA, s.states_last(gB), s.states_last(gC)


def selective_scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """Fast PyTorch scan: a loop over positions with a hand-written backward.

    The recurrence itself is :class:`_SelectiveScanFn` (or, when no gradient is wanted,
    :func:`_scan_inference`, which keeps no states); the element-wise set-up (bias, softplus)
    and finish (D skip, silu gate) stay with autograd. Inputs may be (B, D, L) views of
    (B, L, D) memory, as :class:`~bdgf_core.network.mamba.MambaBlock` passes them; the output
    then has that layout too.
    """
    in_dtype = u.dtype
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus)
    B, C = B.to(u.dtype), C.to(u.dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        y = _SelectiveScanFn.apply(u, delta, A, B, C)
    else:
        y = _scan_inference(u, delta, A, B, C)
    return _finish(y, u, D, z, in_dtype)


def _finish(y: Tensor, u: Tensor, D: Optional[Tensor], z: Optional[Tensor], in_dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(in_dtype)


def selective_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                             D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                             delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """Plain sequential implementation of the recurrence, written for clarity (tests only).

    Works in float64 when given float64 inputs; slow (index slicing per step).
    """
    in_dtype = u.dtype
    bsz, d, length = u.shape
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus)
    Bx = _expand_groups(B.to(u.dtype), d).expand(bsz, d, -1, length)
    Cx = _expand_groups(C.to(u.dtype), d).expand(bsz, d, -1, length)
    h = u.new_zeros(bsz, d, A.shape[1])
    ys = []
    for i in range(length):
        h = torch.exp(delta[:, :, i, None] * A) * h + delta[:, :, i, None] * Bx[..., i] * u[:, :, i, None]
        ys.append((h * Cx[..., i]).sum(-1))
    y = torch.stack(ys, dim=-1)
    return _finish(y, u, D, z, in_dtype)
