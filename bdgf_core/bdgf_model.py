"""The BDGF classifier as a model file and as a block predictor for streaming classification."""
from __future__ import annotations

import numpy as np
import torch

from .errors import BdgfError
from .network.bdgf import BDGFNet
from .normalise import apply
from .training import predict_block


class BDGFPredictor:
    """Normalises raw blocks with the model's statistics and predicts class probabilities."""

    def __init__(self, net: BDGFNet, stats: dict[str, np.ndarray], codes: list[int], batch_size: int = 1024) -> None:
        self.net, self.stats, self.codes = net, stats, codes
        self.patch = net.config.patch
        self.halo = self.patch // 2
        self.batch_size = batch_size

    @classmethod
    def from_file(cls, tensors: dict, meta: dict, device: str = "cpu", batch_size: int | None = None) -> "BDGFPredictor":
        try:
            net = BDGFNet.from_meta(meta["network"])
            state = {k[len("net."):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")}
            net.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise BdgfError(f"the BDGF model file is inconsistent ({exc}); train it again") from None
        net.to(device).eval()
        stats = {k: tensors[k] for k in ("spectral_mean", "spectral_std", "sar_mean", "sar_std")}
        return cls(net, stats, [c["code"] for c in meta["classes"]], batch_size or 1024)

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        s = np.nan_to_num(apply(spectral, self.stats["spectral_mean"], self.stats["spectral_std"]))
        a = np.nan_to_num(apply(sar, self.stats["sar_mean"], self.stats["sar_std"]))
        f = None if features is None else np.nan_to_num(features)
        return predict_block(self.net, s, a, f, self.patch, self.batch_size)
