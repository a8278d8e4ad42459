"""The out-of-memory retry (bdgf_core.oom): halve the batch, retry, stop at a floor with a clear
message. torch.cuda.OutOfMemoryError can be raised on a CPU-only machine, so a fake step that
'runs out of memory' above a batch size stands in for the GPU."""
import numpy as np
import pytest
import torch

from bdgf_core.devices import is_out_of_memory
from bdgf_core.errors import BdgfError
from bdgf_core.oom import OomRetry, for_each_batch, retry_on_oom


class FakeGpu:
    """A step that fits only up to ``capacity`` samples; records the batches it was called with."""

    def __init__(self, capacity: int, error=torch.cuda.OutOfMemoryError) -> None:
        self.capacity, self.error, self.calls = capacity, error, []

    def __call__(self, batch: int) -> str:
        self.calls.append(batch)
        if batch > self.capacity:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran at {batch}"


def test_halves_until_it_fits_and_keeps_that_batch():
    gpu, logs = FakeGpu(capacity=20), []
    retry = OomRetry(batch=128, floor=1, log=logs.append, what="training")
    assert retry.run(gpu) == "ran at 16"
    assert gpu.calls == [128, 64, 32, 16]
    assert retry.batch == 16 and retry.retries == 3
    assert logs[0] == "training: GPU out of memory at batch 128; retrying with batch 64"
    # the next step starts at the batch that fitted: no second search
    retry.run(gpu)
    assert gpu.calls[-1] == 16 and len(gpu.calls) == 5


def test_gives_up_at_the_floor_with_the_fix_in_the_message():
    gpu = FakeGpu(capacity=3)
    with pytest.raises(BdgfError) as err:
        retry_on_oom(gpu, batch=64, floor=8)
    assert str(err.value) == "GPU out of memory even at batch 8; lower --batch-size or use --device cpu"
    assert gpu.calls == [64, 32, 16, 8]


def test_odd_batches_and_a_floor_above_the_half():
    gpu = FakeGpu(capacity=5)
    result, batch = retry_on_oom(gpu, batch=23, floor=5)
    assert gpu.calls == [23, 11, 5] and batch == 5 and result == "ran at 5"
    with pytest.raises(BdgfError, match="even at batch 2;"):
        retry_on_oom(FakeGpu(capacity=1), batch=3, floor=2)


def test_other_errors_pass_through_untouched():
    def broken(batch):
        raise ValueError("a shape mismatch")

    retry = OomRetry(batch=32)
    with pytest.raises(ValueError, match="shape mismatch"):
        retry.run(broken)
    assert retry.batch == 32


def test_runtime_errors_saying_out_of_memory_count_too():
    gpu = FakeGpu(capacity=4, error=lambda m: RuntimeError("CUDA error: out of memory"))
    assert retry_on_oom(gpu, batch=16)[1] == 4
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float but found Half"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))


def test_cpu_message_does_not_blame_a_gpu():
    with pytest.raises(BdgfError) as err:
        retry_on_oom(FakeGpu(capacity=0), batch=2, device="cpu")
    assert "GPU" not in str(err.value) and "even at batch 1" in str(err.value)


def test_the_failed_step_is_released_before_the_retry():
    """The tensors a failed step allocated must be garbage once the retry runs (the exception's
    traceback would otherwise keep them alive, on a GPU: the memory the retry needs)."""
    import weakref

    seen = []

    def step(batch):
        big = torch.zeros(batch, 8)
        seen.append(weakref.ref(big))
        if batch > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        assert all(r() is None for r in seen[:-1])
        return batch

    assert retry_on_oom(step, batch=8)[0] == 2


def test_for_each_batch_covers_every_item_once_in_order():
    out = np.zeros(100, int)
    calls = []

    def step(s, e):
        calls.append((s, e))
        if e - s > 12:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        out[s:e] += 1

    retry = OomRetry(batch=50)
    for_each_batch(100, step, retry)
    assert (out == 1).all()
    assert retry.batch == 12 and calls[:3] == [(0, 50), (0, 25), (0, 12)]
    done = [c for c in calls if c[1] - c[0] <= 12]
    assert done[0] == (0, 12) and done[-1] == (96, 100)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        OomRetry(batch=0)
    with pytest.raises(ValueError):
        OomRetry(batch=4, floor=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (a real out-of-memory error)")
def test_a_real_cuda_out_of_memory_is_survived():
    """On a GPU: a step needing 64 x (free memory / 12) runs out of memory until the batch is <= 8,
    and the memory of each failed attempt is back before the next one."""
    free, _ = torch.cuda.mem_get_info()
    per_sample = free // 12 // 4  # float32 elements per sample
    logs = []

    def step(batch):
        x = torch.empty(batch, per_sample, device="cuda")
        x.fill_(1.0)
        return float(x[:, :1].sum())

    retry = OomRetry(batch=64, floor=1, device="cuda", log=logs.append, what="test")
    assert retry.run(step) == retry.batch
    assert 1 <= retry.batch <= 8 and retry.retries >= 3 and len(logs) == retry.retries
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() < free // 12
