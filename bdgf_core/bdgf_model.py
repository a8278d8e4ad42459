"""The BDGF classifier as a model file and as a block predictor for streaming classification."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .errors import BdgfError
from .network.bdgf import BDGFNet
from .normalise import apply
from .oom import OomRetry
from .training import CPU_MAX_BATCH, GPU_BATCH, predict_block

#: Host memory a BDGF predictor takes besides its weights and batch, measured here about 40 MB
#: (docs/bench/classify.md): reading the model file, and PyTorch's first forward pass on CPU
#: (oneDNN primitives and scratch buffers, thread pools: 15-23 MB).
TORCH_FIRST_USE = 40 * 2**20


class BDGFPredictor:
    """Normalises raw blocks with the model's statistics and predicts class probabilities.

    ``batch_size`` None: chosen by :meth:`plan` from the memory budget (at most CPU_MAX_BATCH on
    CPU), or GPU_BATCH on CUDA until a budget is planned.
    """

    def __init__(self, net: BDGFNet, stats: dict[str, np.ndarray], codes: list[int], batch_size: int | None = None
                 ) -> None:
        self.net, self.stats, self.codes = net, stats, codes
        self.patch = net.config.patch
        self.halo = self.patch // 2
        self.device = next(net.parameters()).device
        self.fixed_batch = batch_size is not None
        self.batch_size = batch_size or (GPU_BATCH if self.device.type == "cuda" else CPU_MAX_BATCH)
        self._per_pixel: float | None = None
        #: "fp32" (exact) or "bf16": bfloat16 autocast on the CPU as well (CUDA always uses it). Not the
        #: exact map: about 1.7x faster on CPUs with bf16 units, see docs/DENSE.md for the change it makes.
        self.precision = "fp32"
        self.log = None  # told when an out-of-memory retry lowers the batch (e.g. Reporter.warning)

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
        return cls(net, stats, [c["code"] for c in meta["classes"]], batch_size)

    def bytes_per_batch_pixel(self) -> float:
        """Host memory one pixel of a batch holds at the peak of a prediction (measured once).

        Predicts an 8 x 8 block of random inputs under :func:`memprobe.module_output_bytes` (every
        layer's output counted as if alive at once: a bound) and adds the batch's patches. On
        CUDA the activations live on the GPU; the bound is then generous for the host.
        """
        if self._per_pixel is None:
            from .memprobe import module_output_bytes

            n, p = 8, self.patch
            rng = np.random.default_rng(0)
            net = self.net
            chans = (net.spectral_bands, net.sar_bands, net.feature_channels if net.config.needs_features else 0)
            blocks = [rng.standard_normal((c, n + p - 1, n + p - 1)).astype(np.float32) if c else None for c in chans]
            layers = module_output_bytes(lambda: predict_block(net, *blocks, p, n * n))
            self._per_pixel = layers / (n * n) + 4 * sum(chans) * p * p
        return self._per_pixel

    def resident_bytes(self) -> int:
        """What the predictor holds whatever the batch: the weights (and their loaded copy), PyTorch's first use."""
        weights = sum(t.numel() * t.element_size() for t in self.net.state_dict().values())
        return 2 * weights + TORCH_FIRST_USE

    def plan(self, memory_bytes: float) -> int:
        """Choose the batch size for a memory budget (unless one was given); return the bytes the
        predictor needs (resident part and batch). The batch may take half of what the resident
        part leaves; the rest is for the blocks of rows.
        """
        per_pixel = self.bytes_per_batch_pixel()
        resident = self.resident_bytes()
        if not self.fixed_batch and self.device.type != "cuda":
            fit = int(0.5 * (memory_bytes - resident) // per_pixel)
            self.batch_size = int(max(1, min(CPU_MAX_BATCH, fit)))
        return int(resident + per_pixel * self.batch_size)

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        s = np.nan_to_num(apply(spectral, self.stats["spectral_mean"], self.stats["spectral_std"]), copy=False)
        a = np.nan_to_num(apply(sar, self.stats["sar_mean"], self.stats["sar_std"]), copy=False)
        f = None if features is None else np.nan_to_num(features)
        # Out of memory (GPU): the block is predicted again with half the batch; the batch that
        # fitted is kept for the following blocks.
        retry = OomRetry(self.batch_size, 1, str(self.device), self.log, "classification")
        with self._precision():
            probs = retry.run(lambda b: predict_block(self.net, s, a, f, self.patch, b))
        self.batch_size = retry.batch
        return probs

    def _precision(self):
        """bf16 autocast on the CPU when asked for; predict_block's own CUDA autocast nests inside it."""
        if self.precision == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
