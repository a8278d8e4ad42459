"""Data-parallel building blocks on CPU (Gloo, 2 processes): global BatchNorm and batch slicing."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bdgf_core.distributed import DistContext, GlobalBatchNorm, loss_scale, rank_slice, split_rows, sync_batchnorm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64)  # 7 samples: uneven slices 4 / 3
    ref = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    bn = sync_batchnorm(nn.Sequential(ref), "cpu")[0]
    assert isinstance(bn, GlobalBatchNorm)
    idx = rank_slice(np.arange(7), DistContext(rank, world))
    xl = x[idx].clone().requires_grad_(True)
    y = bn(xl)
    # global loss = mean over all samples of sum(y**2 * w); the local part scaled like training does
    w = torch.linspace(0.1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)
    loss = (y.pow(2) * w).flatten(1).sum(1).mean() * loss_scale(len(idx), 7, DistContext(rank, world))
    loss.backward()
    for p in bn.parameters():  # what DDP does: average the gradients
        dist.all_reduce(p.grad)
        p.grad /= world
    torch.save({"idx": torch.from_numpy(idx), "y": y.detach(), "gx": xl.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
                "rm": bn.running_mean, "rv": bn.running_var}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_global_batchnorm_matches_one_process_on_the_whole_batch(tmp_path):
    out = str(tmp_path / "bn")
    mp.spawn(_bn_worker, args=(2, free_port(), out), nprocs=2, join=True)
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    ref = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    y = ref(x)
    w = torch.linspace(0.1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)
    (y.pow(2) * w).flatten(1).sum(1).mean().backward()
    parts = [torch.load(f"{out}.{r}") for r in range(2)]
    for p in parts:
        torch.testing.assert_close(p["y"], y.detach()[p["idx"]])
        # each rank's loss is scaled by world / N: its input gradient is world x the global one, and the
        # parameters upstream get the true gradient once DDP divides their summed gradients by world
        torch.testing.assert_close(p["gx"] / 2, x.grad[p["idx"]])
        torch.testing.assert_close(p["gw"], ref.weight.grad)
        torch.testing.assert_close(p["gb"], ref.bias.grad)
        torch.testing.assert_close(p["rm"], ref.running_mean)
        torch.testing.assert_close(p["rv"], ref.running_var)


def test_single_process_is_plain_batchnorm():
    torch.manual_seed(1)
    x = torch.randn(5, 2, 3)
    ref = nn.BatchNorm1d(2)
    got = sync_batchnorm(nn.Sequential(nn.BatchNorm1d(2)), "cpu")[0]
    torch.testing.assert_close(got(x), ref(x))


def test_slices_cover_the_batch_once_and_rows_split_evenly():
    batch = np.arange(11)
    parts = [rank_slice(batch, DistContext(r, 3)) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()
    # per-sample losses: the DDP average of the scaled local means is the global mean
    v = np.random.default_rng(0).random(11)
    local = [v[p].mean() * loss_scale(len(p), 11, DistContext(r, 3)) for r, p in enumerate(parts)]
    assert np.mean(local) == pytest.approx(v.mean())
    rows = split_rows(10, 3)
    assert rows[0][0] == 0 and rows[-1][1] == 10 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert max(b - a for a, b in rows) - min(b - a for a, b in rows) <= 1
