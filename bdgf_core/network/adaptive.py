"""Edge-aware patches (issue 15, not in the paper): neighbours unlike the centre pixel are replaced by it.

A 9 x 9 patch centred on a pixel next to a class edge is half the other class. Training pixels
come from polygons that stop short of the edges, so the network never saw such patches and
smears the edge (docs/bench/edges.md). Here every neighbour j of a patch gets a weight

    r_m(j) = mean over the bands of modality m of (x_j - x_c)^2 / tau_m      (m = spectral, SAR)
    w(j)   = clamp(2 - max_m r_m(j), 0, 1)

and the patch the branches see is w x_j + (1 - w) x_c, for the spectral, SAR and diffusion inputs
alike. tau_m is calibrated once on the training image (:func:`calibrate`): the 0.95 quantile of
the same distance between training pixels and their eight direct neighbours, which lie in the
same polygon. So a neighbour that looks like its own class's neighbours keeps weight 1 (19 in 20
of them at least), one twice as far as that gets 0, and where no modality tells the classes
apart (speckled SAR, similar spectra) the patch stays the paper's, with its context. Training and
prediction go through the same transform, so interior patches look as they did in training and
edge patches look like interior ones of the centre's class.

Choices (the issue leaves them open): the maximum over modalities, so that a class told apart by
its SAR alone is cut as well as one told apart by its spectrum; the 0.95 quantile and the linear
ramp to 2 tau, so that same-class speckle rarely cuts a neighbour.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

QUANTILE = 0.95
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _mean_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.mean((a - b) ** 2, axis=0)


def calibrate(images: Sequence[np.ndarray], rows: np.ndarray, cols: np.ndarray, quantile: float = QUANTILE
              ) -> np.ndarray:
    """tau per image (spectral, SAR): the ``quantile`` of the mean squared band difference between the
    pixels (rows, cols) and their eight direct neighbours (those inside the image). Images are
    (C, H, W), normalised as the network sees them."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    taus = []
    for im in images:
        im = np.nan_to_num(np.asarray(im, np.float32))
        h, w = im.shape[1:]
        centre = im[:, rows, cols]
        d = []
        for dy, dx in _OFFSETS:
            r, c = rows + dy, cols + dx
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            if ok.any():
                d.append(_mean_sq(im[:, r[ok], c[ok]], centre[:, ok]))
        d = np.concatenate(d) if d else np.zeros(1, np.float32)
        taus.append(max(float(np.quantile(d, quantile)), 1e-6))  # a constant image: any change counts
    return np.asarray(taus, np.float32)


class EdgeAwarePatch(nn.Module):
    """forward(spec, sar, dif) -> the same patches with unlike neighbours pulled to the centre pixel.

    ``tau`` (spectral, SAR) is a buffer: saved with the weights, set by :func:`calibrate` before training.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("tau", torch.ones(2))

    def set_tau(self, tau: Sequence[float]) -> None:
        self.tau.copy_(torch.as_tensor(np.asarray(tau, np.float32)))

    def weights(self, spec: Tensor, sar: Tensor) -> Tensor:
        """(N, 1, p, p) weights w in [0, 1]; 1 at the centre."""
        c = spec.shape[-1] // 2
        r = []
        for x, tau in ((spec, self.tau[0]), (sar, self.tau[1])):
            x = x.float()
            r.append(((x - x[..., c:c + 1, c:c + 1]) ** 2).mean(dim=1, keepdim=True) / tau)
        return (2.0 - torch.maximum(r[0], r[1])).clamp(0.0, 1.0)

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        w = self.weights(spec, sar)
        c = spec.shape[-1] // 2

        def pull(x: Optional[Tensor]) -> Optional[Tensor]:
            if x is None:
                return None
            centre = x[..., c:c + 1, c:c + 1]
            return (centre + w.to(x.dtype) * (x - centre)).contiguous(memory_format=_format(x))

        return pull(spec), pull(sar), pull(dif)


def _format(x: Tensor) -> torch.memory_format:
    """Keep channels-last inputs channels-last (oneDNN's convolutions are faster on them)."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
