"""First-layer patch convolutions computed once per tile of pixels instead of once per patch, exactly.

BDGF classifies a pixel from its p x p patches, and the branches' 3 x 3 convolutions zero-pad *the
patch*. So a convolution run once over the whole block is not the function the network computes:
at the patch border the patch sees zeros where the block has the neighbouring pixels. Deeper
layers cannot be shared at all (their inputs already differ between the patches that contain a
pixel). A layer whose input is the raw patch can be, by linearity:

    out_patch(i, j) = b + sum over the 9 offsets d with (i, j) + d inside the patch of W_d x(q + (i, j) + d)

Let Z be the ordinary zero-padded convolution of the tile's window (all pixels the tile's patches
cover). A patch's output is its window of Z minus the terms of the offsets that fall outside the
patch: along its top row the kernel's first row applied one row up (a 1 x 3 convolution of the
window), likewise bottom, left and right (3 x 1), and the four corner taps added back once (they
were subtracted twice). That is the same sum as the per-patch convolution, only in another order
(float rounding differs).

For p = 9 a per-patch 3 x 3 layer costs 81 convolution positions per pixel; here it costs the
convolutions of the window ((th + p - 1) x (tw + p - 1) pixels: the full kernel, four edge rows or
columns, four corner taps: 25 taps, 2.8 full convolutions) plus the copy of the output, which
the per-patch path makes anyway.

Which layers qualify is found by running the net once on a one-pixel batch: any ``Conv2d`` with a
3 x 3 kernel, stride 1, padding 1 (zeros), no dilation or groups whose input *is* a raw patch tensor
(spectral, SAR or diffusion features), and the CNN branch's ``Sequential(_Pad3d, Conv3d)`` spectral
layer fed with the raw spectral patch. Each such module is swapped for a :class:`_Shared` wrapper
while the block is predicted; the wrapper checks on every call that its input is the batch's raw
tensor and otherwise runs the original module, so a change of the network can only make the
sharing fall back to the per-patch computation, never change the result.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUTS = ("spec", "sar", "dif")
_PLANS: "weakref.WeakKeyDictionary[nn.Module, SharedFirstLayers]" = weakref.WeakKeyDictionary()


def tile_shape(batch_size: int, h: int, w: int) -> tuple[int, int]:
    """Rows and columns of the pixel tiles that make the batches: about square, about batch_size pixels."""
    th = max(1, min(h, math.isqrt(max(1, batch_size))))
    return th, max(1, min(w, batch_size // th))


def patches(window: Tensor, p: int, channels_last: bool = False) -> Tensor:
    """(C, th + p - 1, tw + p - 1) -> (th * tw, C, p, p), row-major over the tile's pixels.

    Always a new tensor (callers write into it), contiguous or in the channels-last memory format
    (oneDNN's convolutions are faster on it).
    """
    c, hw, ww = window.shape
    n = (hw - p + 1) * (ww - p + 1)
    w = window.unfold(1, p, 1).unfold(2, p, 1)  # (C, th, tw, p, p), a view
    if channels_last:
        out = window.new_empty(n, p, p, c)
        out.view(hw - p + 1, ww - p + 1, p, p, c).copy_(w.permute(1, 2, 3, 4, 0))
        return out.permute(0, 3, 1, 2)
    out = window.new_empty(n, c, p, p)
    out.view(hw - p + 1, ww - p + 1, c, p, p).copy_(w.permute(1, 2, 0, 3, 4))
    return out


def _plain_conv2d(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.padding == (1, 1)
            and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros")


def _padded_conv3d(m: nn.Module) -> Optional[int]:
    """Spectral zero padding s of a Sequential(pad (1, 1, 1, 1, s, s), Conv3d (k, 3, 3) stride (., 1, 1)), else None."""
    if not (isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[1], nn.Conv3d)):
        return None
    pad, conv = getattr(m[0], "pad", None), m[1]
    ok = (isinstance(pad, tuple) and len(pad) == 6 and pad[:4] == (1, 1, 1, 1) and pad[4] == pad[5]
          and conv.kernel_size[1:] == (3, 3) and conv.stride[1:] == (1, 1) and conv.padding == (0, 0, 0)
          and conv.dilation == (1, 1, 1) and conv.groups == 1 and conv.in_channels == 1)
    return int(pad[4]) if ok else None


class _Shared(nn.Module):
    """Stands in for a first layer while a block is predicted (see the module docstring)."""

    def __init__(self, inner: nn.Module, source: str, plan: "SharedFirstLayers") -> None:
        super().__init__()
        self.inner, self.source, self.plan = inner, source, plan
        self.spectral_pad = _padded_conv3d(inner)
        conv = inner[1] if self.spectral_pad is not None else inner
        w = conv.weight  # (C_out, C_in, [k_s,] 3, 3)
        self.weight = conv.weight.detach()  # (C_out, C_in, [k_s,] 3, 3)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.stride = conv.stride

    def forward(self, x: Tensor) -> Tensor:
        tile = self.plan.tile
        raw = None if tile is None else tile.batch.get(self.source)
        want = None if raw is None else ((raw.shape[0], 1, *raw.shape[1:]) if self.spectral_pad is not None else raw.shape)
        if raw is None or x.data_ptr() != raw.data_ptr() or tuple(x.shape) != tuple(want):
            return self.inner(x)  # not the raw patches of this tile: the per-patch computation
        return self._from_window(tile.window[self.source], tile.th, tile.tw, tile.p)

    def _conv(self, win: Tensor, weight: Tensor, pad: tuple[int, int, int, int], bias: Optional[Tensor] = None
              ) -> Tensor:
        """The layer's convolution of the window, zero-padded by pad = (left, right, top, bottom), with ``weight``."""
        if self.spectral_pad is None:
            return F.conv2d(F.pad(win[None], pad), weight, bias)[0]
        s = self.spectral_pad
        y = F.conv3d(F.pad(win[None, None], (*pad, s, s)), weight, bias, stride=self.stride)[0]
        return y.flatten(0, 1)  # (C_out * S', h, w): channel-major, as the patch output's reshape expects

    def _from_window(self, win: Tensor, th: int, tw: int, p: int) -> Tensor:
        hw, ww = win.shape[1:]
        w = self.weight.to(win.dtype)
        bias = None if self.bias is None else self.bias.to(win.dtype)
        z = self._conv(win, w, (1, 1, 1, 1), bias)  # the zero-padded convolution of the window
        # Terms of the offsets outside a patch: row -1 / row +1 / column -1 / column +1 of the kernel
        # (the edge convolutions) and the four corner taps, each read at the pixel they correct.
        top = self._conv(win, w[..., 0:1, :], (1, 1, 1, 0))[:, :hw]
        bottom = self._conv(win, w[..., 2:3, :], (1, 1, 0, 1))[:, 1:]
        left = self._conv(win, w[..., :, 0:1], (1, 0, 1, 1))[:, :, :ww]
        right = self._conv(win, w[..., :, 2:3], (0, 1, 1, 1))[:, :, 1:]
        corners = self._conv(win, torch.cat([w[..., a:a + 1, b:b + 1] for a in (0, 2) for b in (0, 2)]),
                             (1, 1, 1, 1))  # (4 C, hw + 2, ww + 2): tap (a, b) of pixel y at y + (a, b)
        c = z.shape[0]
        q = p - 1
        out = patches(z, p, channels_last=self.spectral_pad is None).view(th, tw, c, p, p)
        out[:, :, :, 0, :] -= top[:, :th].unfold(2, p, 1).permute(1, 2, 0, 3)
        out[:, :, :, q, :] -= bottom[:, q:q + th].unfold(2, p, 1).permute(1, 2, 0, 3)
        out[:, :, :, :, 0] -= left[:, :, :tw].unfold(1, p, 1).permute(1, 2, 0, 3)
        out[:, :, :, :, q] -= right[:, :, q:q + tw].unfold(1, p, 1).permute(1, 2, 0, 3)
        tl, tr, bl, br = corners.view(4, c, hw + 2, ww + 2).unbind(0)
        # corner tap (a, b) at patch position (i, j) reads the window pixel (i + a - 1, j + b - 1)
        out[:, :, :, 0, 0] += tl[:, :th, :tw].permute(1, 2, 0)
        out[:, :, :, 0, q] += tr[:, :th, q + 2:q + 2 + tw].permute(1, 2, 0)
        out[:, :, :, q, 0] += bl[:, q + 2:q + 2 + th, :tw].permute(1, 2, 0)
        out[:, :, :, q, q] += br[:, q + 2:q + 2 + th, q + 2:q + 2 + tw].permute(1, 2, 0)
        out = out.view(th * tw, c, p, p)
        if self.spectral_pad is not None:
            out = out.view(th * tw, self.weight.shape[0], -1, p, p)
        return out


class _Tile:
    def __init__(self, window: dict[str, Tensor], batch: dict[str, Tensor], th: int, tw: int, p: int) -> None:
        self.window, self.batch, self.th, self.tw, self.p = window, batch, th, tw, p


class SharedFirstLayers:
    """The net's first layers that can be computed per tile (found once, see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = weakref.ref(net)
        self.names: list[tuple[str, str]] = _find(net)  # (module path, input name)
        self.tile: Optional[_Tile] = None

    @classmethod
    def of(cls, net: nn.Module) -> "SharedFirstLayers":
        """The plan of ``net``, found on first use and kept while the net lives."""
        plan = _PLANS.get(net)
        if plan is None:
            plan = _PLANS[net] = cls(net)
        return plan

    @contextlib.contextmanager
    def installed(self) -> Iterator["SharedFirstLayers"]:
        """Swap the first layers for their shared stand-ins; the original modules come back on exit."""
        net = self.net()
        swapped = []
        try:
            for path, source in self.names:
                parent, _, leaf = path.rpartition(".")
                owner = net.get_submodule(parent) if parent else net
                inner = getattr(owner, leaf) if not leaf.isdigit() else owner[int(leaf)]
                stand_in = _Shared(inner, source, self)
                _set(owner, leaf, stand_in)
                swapped.append((owner, leaf, inner))
            yield self
        finally:
            for owner, leaf, inner in reversed(swapped):
                _set(owner, leaf, inner)
            self.tile = None

    def set_tile(self, windows: Sequence[Optional[Tensor]], batch: Sequence[Optional[Tensor]], th: int, tw: int,
                 p: int) -> None:
        """The raw windows (C, th + p - 1, tw + p - 1) and patch batches (th * tw, C, p, p) about to go through the net."""
        self.tile = _Tile({k: v for k, v in zip(INPUTS, windows) if v is not None},
                          {k: v for k, v in zip(INPUTS, batch) if v is not None}, th, tw, p)


def _set(owner: nn.Module, leaf: str, module: nn.Module) -> None:
    if leaf.isdigit():
        owner[int(leaf)] = module
    else:
        setattr(owner, leaf, module)


def _find(net: nn.Module) -> list[tuple[str, str]]:
    """Run the net on a one-pixel batch and record the qualifying modules fed with a raw input."""
    p = net.config.patch
    dev = next(net.parameters()).device
    raw = {"spec": torch.zeros(1, net.spectral_bands, p, p, device=dev),
           "sar": torch.zeros(1, net.sar_bands, p, p, device=dev),
           "dif": torch.zeros(1, max(net.feature_channels, 1), p, p, device=dev) if net.config.needs_features else None}
    found: list[tuple[str, str]] = []
    hooks = []

    def hook(name: str, three_d: bool):
        def pre(_module, args):
            x = args[0]
            for k, t in raw.items():
                shape = (t.shape[0], 1, *t.shape[1:]) if (t is not None and three_d) else (None if t is None else t.shape)
                if t is not None and x.data_ptr() == t.data_ptr() and tuple(x.shape) == tuple(shape):
                    if (name, k) not in found:
                        found.append((name, k))
        return pre

    for name, m in net.named_modules():
        if _plain_conv2d(m) or _padded_conv3d(m) is not None:
            hooks.append(m.register_forward_pre_hook(hook(name, _padded_conv3d(m) is not None)))
    try:
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            net(raw["spec"], raw["sar"], raw["dif"])
        net.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return found
