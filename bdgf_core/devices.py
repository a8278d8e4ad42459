"""Device choice: auto picks CUDA when present; asking for CUDA without a GPU is an error."""
from __future__ import annotations

from .errors import BdgfError


def resolve_device(device: str, rep=None) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise BdgfError("device cuda was asked for, but no CUDA GPU is available to PyTorch here; "
                        "use device auto or cpu")
    elif device not in ("cpu", "cuda"):
        raise BdgfError(f"unknown device {device!r}; use auto, cpu or cuda")
    if rep is not None:
        name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
        rep.info(f"device: {device} ({name}, {torch.get_num_threads()} threads)" if device == "cpu"
                 else f"device: cuda ({name})")
    return device
