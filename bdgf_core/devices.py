"""Device choice: auto picks CUDA when present; asking for CUDA without a GPU is an error.

Also the CPU threads a run may use (:func:`cpu_threads`), and the two facts about memory that the
out-of-memory retry (bdgf_core.oom) needs: whether an exception means the device ran out of memory,
and how to hand the cached memory back.
"""
from __future__ import annotations

import gc
import math
import os
from pathlib import Path
from typing import Optional

from .errors import BdgfError

#: Texts of out-of-memory failures that PyTorch raises as plain RuntimeErrors (a kernel launch or
#: cuBLAS handle that cannot get memory) rather than as torch.OutOfMemoryError.
_OOM_TEXTS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> Optional[float]:
    """The CPU quota in cores of the cgroup mounted at ``root`` (a container's own: v2 ``cpu.max``, v1
    ``cpu/cpu.cfs_*``), or None without a quota. A container limited to 2 cores on a 64-core host
    still shows 64 cores to os.cpu_count() and to PyTorch, which then runs 64 threads on 2 cores' time."""
    base = Path(root)
    try:
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cpu_threads(environ=os.environ, root: str = "/sys/fs/cgroup") -> int:
    """Threads for PyTorch's CPU work: BDGF_THREADS or OMP_NUM_THREADS when set (torchrun sets the
    latter per process); else the CPUs this process may run on (affinity), capped by the cgroup's
    quota (rounded up), and shared by the processes of a torchrun node (LOCAL_WORLD_SIZE)."""
    for name in ("BDGF_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                raise BdgfError(f"{name}={value!r} is not a number of threads; set a whole number >= 1 or "
                                "unset it") from None
            if n < 1:
                raise BdgfError(f"{name}={n}: at least 1 thread is needed; set a whole number >= 1 or unset it")
            return n
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    try:
        local = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, n // local)


def resolve_device(device: str, rep=None) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise BdgfError("device cuda was asked for, but no CUDA GPU is available to PyTorch here; "
                        "use device auto or cpu")
    elif device not in ("cpu", "cuda"):
        raise BdgfError(f"unknown device {device!r}; use auto, cpu or cuda")
    threads = cpu_threads()
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
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
