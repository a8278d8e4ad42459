"""Device choice: auto picks CUDA when present; asking for CUDA without a GPU is an error.

Also the two facts about memory that the out-of-memory retry (bdgf_core.oom) needs: whether an
exception means the device ran out of memory, and how to hand the cached memory back.
"""
from __future__ import annotations

import gc

from .errors import BdgfError

#: Texts of out-of-memory failures that PyTorch raises as plain RuntimeErrors (a kernel launch or
#: cuBLAS handle that cannot get memory) rather than as torch.OutOfMemoryError.
_OOM_TEXTS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


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


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says the device ran out of memory (torch.OutOfMemoryError, which
    torch.cuda.OutOfMemoryError names, or a RuntimeError with an allocation failure's text)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXTS)


def free_cached_memory(device: str = "cuda") -> None:
    """Collect garbage and give the CUDA caching allocator's free blocks back to the driver."""
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
