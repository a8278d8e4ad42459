"""A compact fully convolutional student of the BDGF classifier (opt-in fast map, not in the paper).

The BDGF network classifies a pixel from its p x p patches and zero-pads inside each patch, so
most of its work cannot be shared between neighbouring pixels (docs/DENSE.md). This student is
built so that it can: a 1 x 1 convolution of the stacked inputs, then p // 2 unpadded 3 x 3
convolutions, then a 1 x 1 head. Its receptive field is exactly the teacher's p x p patch, and
with no padding anywhere the same function runs on one patch (N, C, p, p) -> (N, classes, 1, 1)
or on a whole block with its halo (1, C, h + p - 1, w + p - 1) -> (1, classes, h, w).
"""
from __future__ import annotations

from torch import Tensor, nn


class StudentNet(nn.Module):
    """Fully convolutional classifier whose receptive field is a p x p patch.

    forward(x (N, in_ch, h + p - 1, w + p - 1)) -> logits (N, n_classes, h, w); ``x`` stacks the
    normalised spectral, SAR and (when the teacher reads them) diffusion-feature channels.
    """

    def __init__(self, in_ch: int, n_classes: int, patch: int, width: int = 64) -> None:
        super().__init__()
        if patch < 1 or patch % 2 == 0:
            raise ValueError(f"patch size must be odd and positive, got {patch}")
        self.in_ch, self.n_classes, self.patch, self.width = in_ch, n_classes, patch, width
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(patch // 2):  # each unpadded 3 x 3 layer widens the receptive field by 2
            layers += [nn.Conv2d(width, width, 3), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.Conv2d(width, n_classes, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def meta(self) -> dict:
        return {"in_ch": self.in_ch, "n_classes": self.n_classes, "patch": self.patch, "width": self.width}

    @classmethod
    def from_meta(cls, meta: dict) -> "StudentNet":
        return cls(int(meta["in_ch"]), int(meta["n_classes"]), int(meta["patch"]), int(meta["width"]))

    def flops_per_pixel(self) -> int:
        """Multiply-adds x 2 per output pixel (convolutions only)."""
        return sum(2 * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                   for m in self.body if isinstance(m, nn.Conv2d))
