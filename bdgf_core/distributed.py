"""Data parallelism on PyTorch's own engine: torchrun + DistributedDataParallel.

Run any training command unchanged under ``torchrun --nproc_per_node N python -m bdgf_core ...``:
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT and ``context()`` joins
the process group (NCCL on CUDA, Gloo on CPU). The design keeps results independent of the number
of processes:

* every rank draws the same global batch (same seed, same permutation) and takes its slice
  ``batch[rank::world]``; the global batch size is the single-process one;
* each rank's loss is scaled by ``len(slice) * world / len(batch)`` so that DDP's gradient
  average equals the gradient of the mean over the whole global batch, also for a short last batch;
* BatchNorm normalises with the statistics of the whole global batch: ``nn.SyncBatchNorm`` on
  CUDA, and on CPU (where PyTorch's SyncBatchNorm refuses to run) ``GlobalBatchNorm`` below,
  which all-reduces the per-channel sums with autograd;
* only rank 0 writes checkpoints, model files, reports and progress (and locks the outputs,
  bdgf_core/locks.py); every rank reports its own error, and torchrun ends the other ranks when
  one fails;
* every worker ends with its agent (the parent-death signal; torchrun starts each worker in a
  session of its own, out of reach of a signal to the agent's group) and, when QGIS started the
  job, with QGIS (the stdin pipe the workers inherit): bdgf_core/lifeline.py.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import BdgfError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context(device: str) -> DistContext:
    """Join the process group torchrun describes (once); a single process gets SINGLE."""
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        except Exception as exc:  # bad rendezvous options, unreachable master, ...
            raise BdgfError(f"could not join the torchrun process group ({exc}); check torchrun's "
                            "--nnodes/--rdzv-endpoint options and that every node can reach the master") from None
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return ctx


def rank_device(device: str, ctx: DistContext) -> str:
    """One GPU per process on a node: cuda -> cuda:LOCAL_RANK."""
    if ctx.enabled and device == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise BdgfError(f"process {ctx.local_rank} on this node has no GPU of its own "
                            f"({torch.cuda.device_count()} visible); use --nproc_per_node <= the GPU count")
        torch.cuda.set_device(ctx.local_rank)
        return f"cuda:{ctx.local_rank}"
    return device


def join(requested: str, rep=None) -> tuple[DistContext, Callable[[], str]]:
    """Resolve the device and join the process group (one process: nothing to join).

    Returns the context and ``device()``, to call inside the agreed set-up (:func:`run_agreed`):
    it gives this rank's device, or raises the device error resolving met. The error is deferred
    so that it is reported once, by rank 0, after every process has joined.
    """
    from .devices import resolve_device

    failure = None
    try:
        device = resolve_device(requested, rep)
    except BdgfError as exc:
        device, failure = "cpu", exc
    ctx = context(device)

    def this_rank_device() -> str:
        if failure is not None:
            raise failure
        return rank_device(device, ctx)

    return ctx, this_rank_device


def rank_slice(batch: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's part of a global batch of indices."""
    return batch[ctx.rank::ctx.world] if ctx.enabled else batch


def loss_scale(n_local: int, n_global: int, ctx: DistContext) -> float:
    """Scale of the local mean loss so that DDP's average of gradients is the global mean's."""
    return n_local * ctx.world / n_global if ctx.enabled else 1.0


def check_batch(global_batch: int, ctx: DistContext) -> None:
    if ctx.enabled and global_batch < ctx.world:
        raise BdgfError(f"the batch size {global_batch} is smaller than the {ctx.world} processes; "
                        f"use a batch size of at least {ctx.world} or fewer processes")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with the statistics of the batch summed over all ranks (any backend, with autograd).

    Training mode only differs from nn.BatchNorm*d; evaluation uses the running statistics.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module, device: str) -> nn.Module:
    """Make every BatchNorm normalise over the global batch."""
    if device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        ref = module.weight if module.affine else module.running_mean
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, **kw)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


def unwrap_state(module: nn.Module) -> dict:
    """The state dict of the plain module (without DDP's ``module.`` prefix)."""
    inner = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    return inner.state_dict()


def all_ranks_agree(flag: bool, ctx: DistContext) -> bool:
    """True when every rank says True (e.g. 'not cancelled'): one rank's cancel stops all at the same step."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` (picklable; tensors on the CPU) on every rank; ``obj`` of the others is ignored."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def split_rows(height: int, world: int) -> Sequence[tuple[int, int]]:
    """Contiguous row ranges, one per process, for classification."""
    edges = np.linspace(0, height, world + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class PeerFailed(Exception):
    """Another process of the job failed: rank 0 reports its error, this process ends quietly (exit 0)."""


def _describe(exc: BaseException) -> tuple[str, str]:
    from .errors import Cancelled

    if isinstance(exc, Cancelled):
        return "cancelled", str(exc)
    if isinstance(exc, BdgfError):
        return "error", str(exc)
    if isinstance(exc, MemoryError):
        return "memory", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"


def agree_on_failure(failure: BaseException | None, ctx: DistContext) -> None:
    """Collective end of a phase that may fail on some ranks only; raises on every rank when one failed.

    One process alone must tell the user, or the job's error would be whichever rank printed last
    (and torchrun, seeing one rank exit non-zero, terminates the others, who would report a
    cancel). So rank 0 raises the failure (its own, else the lowest failing rank's, named
    "process N: ..." and of the same kind, so the exit code is the same), and every other rank raises
    :class:`PeerFailed`, which its command turns into a quiet exit 0 once its own clean-up is done.
    A single process just raises its failure.
    """
    if not ctx.enabled:
        if failure is not None:
            raise failure
        return
    try:
        if all_ranks_agree(failure is None, ctx):
            return
        notes: list = [None] * ctx.world
        dist.all_gather_object(notes, None if failure is None else _describe(failure))
    except Exception as exc:  # a peer died without reporting: its connection closed under the collective
        if failure is not None:
            raise failure
        raise BdgfError(f"another process of the torchrun job ended without reporting an error ({exc}); "
                        "see the messages above in the log") from None
    if not ctx.is_main:
        if failure is not None and _describe(failure)[0] == "internal":
            import traceback

            traceback.print_exception(failure)  # the details of an unexpected error stay in this rank's log
        # Nothing left to report: when rank 0 exits with the error first, torchrun terminates this
        # process, which must then end silently, not report a cancel after rank 0's error.
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise PeerFailed()
    if failure is not None:
        raise failure
    rank, (kind, message) = next((r, n) for r, n in enumerate(notes) if n is not None)
    from .errors import Cancelled

    if kind == "cancelled":
        raise Cancelled(message)
    if kind == "memory":
        raise MemoryError(f"process {rank}: {message}")
    if kind == "error":
        raise BdgfError(f"process {rank}: {message}")
    raise RuntimeError(f"process {rank}: {message} (its traceback is in the log)")


_T = TypeVar("_T")


def run_agreed(step: Callable[[], _T], ctx: DistContext) -> _T:
    """``step()`` on every rank, then :func:`agree_on_failure`; its value when every rank succeeded."""
    failure: BaseException | None = None
    value = None
    try:
        value = step()
    except BaseException as exc:  # noqa: BLE001 - Cancelled and KeyboardInterrupt too: the others must learn
        failure = exc
    agree_on_failure(failure, ctx)
    return value
