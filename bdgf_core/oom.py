"""Out of memory on the GPU: halve the batch and retry, down to a floor, then fail clearly.

A CUDA out-of-memory error leaves the process usable: once the exception is gone, the tensors
of the failed step are freed and ``torch.cuda.empty_cache()`` hands the cached blocks back. So a
step that does not fit at batch B is run again at B // 2, B // 4, ... down to ``floor``; when
even the floor does not fit, the run stops with a message that names the fix. The batch that
fitted is kept for the following steps, so the search happens once per run, not once per step.

The step must be restartable: it may run again from the start with a smaller batch (do the
forward and backward passes inside it, and ``optimizer.step()`` only once they succeeded).

    retry = OomRetry(batch=cfg.batch_size, floor=2, device=device, log=rep.warning, what="training")
    loss = retry.run(lambda b: train_step(idx, micro_batch=b))      # one call
    for_each_batch(n_pixels, lambda s, e: predict(s, e), retry)       # chunks of [0, n)
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

from .devices import free_cached_memory, is_out_of_memory
from .errors import BdgfError

T = TypeVar("T")


class OomRetry:
    """Runs ``fn(batch)``; on out-of-memory halves ``batch`` (not below ``floor``) and retries.

    ``batch`` always holds the largest batch known to fit (or the one to try first).
    ``log`` (e.g. ``Reporter.warning``) is told each time the batch is lowered.
    """

    def __init__(self, batch: int, floor: int = 1, device: str = "cuda",
                 log: Optional[Callable[[str], None]] = None, what: str = "") -> None:
        if floor < 1:
            raise ValueError(f"the batch floor must be at least 1, got {floor}")
        if batch < 1:
            raise ValueError(f"the batch must be at least 1, got {batch}")
        self.batch = max(int(batch), int(floor))
        self.floor = int(floor)
        self.device = str(device)
        self.log = log
        self.what = what
        self.retries = 0

    def run(self, fn: Callable[[int], T]) -> T:
        while True:
            try:
                return fn(self.batch)
            except Exception as exc:  # noqa: BLE001 - anything that is not out-of-memory is re-raised
                if not is_out_of_memory(exc):
                    raise
            # Outside the except block: the exception, its traceback and the failed step's tensors
            # are released before the cache is emptied and the step runs again.
            free_cached_memory(self.device)
            if self.batch <= self.floor:
                raise BdgfError(self.message())
            smaller = max(self.floor, self.batch // 2)
            if self.log is not None:
                where = f"{self.what}: " if self.what else ""
                self.log(f"{where}{self._kind()}out of memory at batch {self.batch}; "
                         f"retrying with batch {smaller}")
            self.batch = smaller
            self.retries += 1

    __call__ = run

    def message(self) -> str:
        if self.device.startswith("cuda"):
            return (f"GPU out of memory even at batch {self.batch}; lower --batch-size or use --device cpu")
        return (f"out of memory even at batch {self.batch}; lower --batch-size (or the memory budget) "
                "or close other programs")

    def _kind(self) -> str:
        return "GPU " if self.device.startswith("cuda") else ""


def retry_on_oom(fn: Callable[[int], T], batch: int, floor: int = 1, device: str = "cuda",
                 log: Optional[Callable[[str], None]] = None, what: str = "") -> tuple[T, int]:
    """One call of ``fn(batch)`` with the retry; returns (result, the batch that fitted)."""
    retry = OomRetry(batch, floor, device, log, what)
    return retry.run(fn), retry.batch


def for_each_batch(n: int, step: Callable[[int, int], None], retry: OomRetry) -> None:
    """Call ``step(start, end)`` over [0, n) in chunks of ``retry.batch``; a chunk that runs out of
    memory is run again from the same start with the halved batch (earlier chunks are kept)."""
    start = 0
    while start < n:
        def chunk(b: int, s: int = start) -> int:
            e = min(s + b, n)
            step(s, e)
            return e

        start = retry.run(chunk)
