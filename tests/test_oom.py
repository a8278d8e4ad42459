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


# ---------------------------------------------------------------------------------------------
# Diffusion pretraining: a step that does not fit runs as micro-batches of the same global batch


def _diffusion_scene(h=30, w=34, seed=0):
    from test_diffusion_pretrain import _scene

    return _scene(h, w, seed, period=8.0)


def _pretrain(steps, lr=1e-3, log=None):
    from bdgf_core.diffusion import DiffusionConfig, pretrain_ddpm

    cfg = DiffusionConfig(widths=(4, 8, 8), time_dim=8, tile=_TILE, batch=8, lr=lr, steps=steps, timesteps=(5,),
                          feature_channels=0)
    losses = []
    model = pretrain_ddpm(*_diffusion_scene(), None, cfg, log=log,
                          progress=lambda f, m: losses.append(float(m.rsplit(" ", 1)[1])) if "loss" in m else None)
    return model, losses


_TILE = 12  # not the 16 x 16 window of the FLOP count (diffusion.cost), which the fake GPU leaves alone


def _tight_gpu(monkeypatch, capacity):
    """The denoiser 'runs out of memory' on training batches above ``capacity`` tiles; returns their sizes."""
    from bdgf_core.diffusion.unet import UNet3D

    calls, forward = [], UNet3D.forward

    def tight(self, x, t, return_features=False):
        if self.training and x.shape[-1] == _TILE:
            calls.append(x.shape[0])
            if x.shape[0] > capacity:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, t, return_features)

    monkeypatch.setattr(UNet3D, "forward", tight)
    return calls


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].dtype.is_floating_point)


def test_pretraining_step_falls_back_to_micro_batches_with_the_same_gradient(monkeypatch):
    """Without BatchNorm's batch coupling (GroupNorm in its place) and with plain SGD (no Adam
    normalisation to amplify rounding), micro-batches of 2 give the weights of whole batches of 8."""
    monkeypatch.setattr(torch.nn, "BatchNorm3d", lambda c: torch.nn.GroupNorm(1, c))
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr: torch.optim.SGD(params, lr=lr))
    ref, ref_losses = _pretrain(steps=3, lr=0.1)
    calls, logs = _tight_gpu(monkeypatch, capacity=2), []
    got, losses = _pretrain(steps=3, lr=0.1, log=logs.append)
    # step 1: 8 and 4 fail, then 4 micro-batches of 2; the next steps start at 2
    assert calls == [8, 4] + [2] * 4 * 3
    assert logs == [f"diffusion pretraining: out of memory at batch {b}; retrying with batch {b // 2} (micro-batches "
                    "with gradient accumulation: each step still uses all 8 tiles)" for b in (8, 4)]
    assert got.meta_extra["training"]["micro_batch"] == 2 and got.meta_extra["training"]["steps_this_run"] == 3
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)  # the loss of the whole global batch
    a, b = ref.net.state_dict(), got.net.state_dict()
    assert _max_diff(a, b) < 1e-6  # rounding only (measured 3e-8; the weights moved by 3e-2)


def test_pretraining_micro_batches_with_batchnorm(monkeypatch):
    """The real denoiser: BatchNorm normalises each micro-batch with its own statistics (the only
    difference), while its running statistics get one update per step from the whole batch."""
    ref, ref_losses = _pretrain(steps=1)
    calls = _tight_gpu(monkeypatch, capacity=3)
    got, losses = _pretrain(steps=1, log=[].append)
    assert calls == [8, 4, 2, 2, 2, 2]
    a, b = ref.net.state_dict(), got.net.state_dict()
    bns = [k[:-len(".running_mean")] for k in a if k.endswith(".running_mean")]
    assert all(int(b[f"{k}.num_batches_tracked"]) == 1 for k in bns)  # one update per step, not per micro-batch
    # the first BatchNorm sees the same inputs either way: the same running statistics
    for k in ("running_mean", "running_var"):
        torch.testing.assert_close(b[f"down_blocks.0.bn.{k}"], a[f"down_blocks.0.bn.{k}"], rtol=1e-5, atol=1e-6)
    assert losses[0] == pytest.approx(ref_losses[0], rel=0.01)
    # Adam's first step moves each weight by about lr: the same step for nearly all of them, a step the
    # other way where the micro-batch statistics turn a gradient that is ~0 (a conv bias before BatchNorm)
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if a[k].dtype.is_floating_point and "running" not in k])
    assert float(diffs.median()) < 1e-6 and float(diffs.max()) <= 2.2e-3


def test_pretraining_out_of_memory_even_at_one_tile(monkeypatch):
    calls = _tight_gpu(monkeypatch, capacity=0)
    with pytest.raises(BdgfError) as err:
        _pretrain(steps=2)
    assert calls == [8, 4, 2, 1]
    assert str(err.value) == ("out of memory in diffusion pretraining even with micro-batches of 1 tile of 12 x 12 "
                              "pixels; lower --tile-size, use the 'fast' profile or close other programs")


def test_pretraining_other_errors_are_not_retried(monkeypatch):
    from bdgf_core.diffusion.unet import UNet3D

    calls = []

    def broken(self, x, t, return_features=False):
        calls.append(x.shape[0])
        raise RuntimeError("expected scalar type Float but found Half")

    monkeypatch.setattr(UNet3D, "forward", broken)
    with pytest.raises(RuntimeError, match="scalar type"):
        _pretrain(steps=2)
    assert calls == [8]
