"""Model files with random weights for tests of streaming and memory (the numbers, not the accuracy,
are under test): a small BDGF network with the given band counts, written as Train BDGF writes it."""
from __future__ import annotations

import numpy as np
import torch


def random_bdgf_file(path, spectral: int, sar: int, features: int, classes: int = 4, patch: int = 3,
                     spectral_stats: tuple[float, float] = (0.0, 1.0), sar_stats: tuple[float, float] = (0.0, 1.0),
                     seed: int = 0):
    """Write a seeded random BDGF model file; the stats (mean, std) are its input normalisation."""
    from bdgf_core.groundtruth import ClassInfo
    from bdgf_core.modelfile import save_model
    from bdgf_core.network.bdgf import BDGFConfig, BDGFNet

    torch.manual_seed(seed)
    net = BDGFNet(spectral, sar, features, classes,
                  BDGFConfig(patch=patch, embed=8, tokens=2, d_state=4, expand=1)).eval()
    cls = [ClassInfo(i + 1, f"class {i + 1}", "#3366aa").to_json() for i in range(classes)]
    meta = {"model_id": "test", "classes": cls, "network": net.meta(),
            "inputs": {"spectral_bands": spectral, "sar_bands": sar, "feature_bands": features}}
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({"spectral_mean": np.full(spectral, spectral_stats[0], np.float32),
                    "spectral_std": np.full(spectral, spectral_stats[1], np.float32),
                    "sar_mean": np.full(sar, sar_stats[0], np.float32),
                    "sar_std": np.full(sar, sar_stats[1], np.float32)})
    save_model(path, "bdgf", tensors, meta)
    return path
