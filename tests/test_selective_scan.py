"""Selective scan: fast PyTorch path vs the sequential reference, gradients, mamba-ssm parity.

The reference (`selective_scan_reference`) is the recurrence written out step by step with
autograd; the fast path (`selective_scan_torch`) has its own backward, so both its values and
its gradients are checked against the reference, in float64 where the comparison can be tight.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bdgf_core.network.mamba import ChannelAttention, MambaBlock
from bdgf_core.network.selective_scan import (fused_scan_fn, selective_scan, selective_scan_reference,
                                              selective_scan_torch)

NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _inputs(b: int = 2, d: int = 6, n: int = 4, length: int = 7, groups: int = 0, dtype=torch.float32, seed: int = 0,
            channels_last: bool = False):
    """Scan inputs; ``channels_last`` gives (B, D, L) views of (B, L, D) memory, as MambaBlock passes."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    seq = (lambda: r(b, length, d).transpose(1, 2)) if channels_last else (lambda: r(b, d, length))
    bc_shape = (b, groups, n, length) if groups else (b, n, length)
    return dict(u=seq(), delta=seq() * 0.5, A=-torch.rand(d, n, generator=g, dtype=dtype) - 0.1,
                B=r(*bc_shape), C=r(*bc_shape), D=r(d), z=seq(), delta_bias=r(d) * 0.1)


def _value_and_grads(fn, x: dict, weights: torch.Tensor) -> tuple[torch.Tensor, dict]:
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in x.items()}
    out = fn(**leaves)
    (out * weights).sum().backward()
    return out.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


@pytest.mark.parametrize("length", [1, 2, 5, 33, 130])
@pytest.mark.parametrize("groups", [0, 2])
def test_fast_scan_matches_reference_float64(length: int, groups: int) -> None:
    x = _inputs(b=3, d=6, n=4, length=length, groups=groups, dtype=torch.float64, seed=length)
    w = torch.randn(3, 6, length, dtype=torch.float64)
    ours, g_ours = _value_and_grads(selective_scan_torch, x, w)
    ref, g_ref = _value_and_grads(selective_scan_reference, x, w)
    assert ours.shape == (3, 6, length) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    for k in NAMES:
        assert g_ours[k].shape == x[k].shape
        torch.testing.assert_close(g_ours[k], g_ref[k], rtol=1e-9, atol=1e-9, msg=f"grad of {k}")


@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("optional", [True, False])
def test_fast_scan_matches_reference(groups: int, optional: bool) -> None:
    x = _inputs(length=33, groups=groups)
    if not optional:
        x.update(D=None, z=None, delta_bias=None)
    ours = selective_scan_torch(**x)
    ref = selective_scan_reference(**{k: (v.double() if v is not None else None) for k, v in x.items()})
    assert ours.shape == (2, 6, 33) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 60])
def test_fp32_gradients_match_float64_reference_at_block_size(length: int) -> None:
    """The Mamba branch's own sizes (d_inner 128, d_state 16), inputs laid out as MambaBlock's."""
    x = _inputs(b=4, d=128, n=16, length=length, channels_last=True, seed=1)
    w = torch.randn(4, 128, length)
    ours, g_ours = _value_and_grads(selective_scan_torch, x, w)
    ref, g_ref = _value_and_grads(selective_scan_reference, {k: v.double() for k, v in x.items()}, w.double())
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)
    for k in NAMES:
        scale = g_ref[k].abs().max().item()  # sums over the batch and L (A, D, delta_bias) grow large
        torch.testing.assert_close(g_ours[k].double(), g_ref[k], rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                   msg=f"grad of {k}")


def test_no_softplus_path() -> None:
    x = _inputs()
    x["delta"] = x["delta"].abs()
    torch.testing.assert_close(selective_scan_torch(**x, delta_softplus=False),
                               selective_scan_reference(**x, delta_softplus=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [0, 3])
def test_gradcheck_fast_scan(groups: int) -> None:
    x = _inputs(b=2, d=3 if not groups else 6, n=2, length=5, groups=groups, dtype=torch.float64)
    args = [x[k].clone().requires_grad_() for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_torch(*a), args, eps=1e-6, atol=1e-7)


def test_gradients_match_reference() -> None:
    x = _inputs(length=20)
    w = torch.randn(2, 6, 20)
    _, g_ours = _value_and_grads(selective_scan_torch, x, w)
    _, g_ref = _value_and_grads(selective_scan_reference, x, w)
    for k in NAMES:
        torch.testing.assert_close(g_ours[k], g_ref[k], rtol=1e-4, atol=1e-4, msg=f"grad of {k}")


def test_only_some_inputs_need_grad() -> None:
    x = _inputs(length=9, dtype=torch.float64)
    u = x["u"].clone().requires_grad_()
    selective_scan_torch(**{**x, "u": u}).sum().backward()
    u_ref = x["u"].clone().requires_grad_()
    selective_scan_reference(**{**x, "u": u_ref}).sum().backward()
    torch.testing.assert_close(u.grad, u_ref.grad, rtol=1e-10, atol=1e-10)


def test_inference_path_matches_training_path() -> None:
    """Without autograd the scan keeps one running state instead of all of them: same output."""
    x = _inputs(length=17, groups=2, channels_last=True)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    train = selective_scan_torch(**leaves)
    with torch.no_grad():
        infer = selective_scan_torch(**leaves)  # inputs require grad, but grad mode is off
    plain = selective_scan_torch(**x)  # nothing requires grad
    assert not infer.requires_grad and not plain.requires_grad
    torch.testing.assert_close(infer, train.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plain, infer, rtol=0, atol=0)


def test_output_keeps_the_layout_of_u_and_layouts_agree() -> None:
    x_cl = _inputs(length=11, channels_last=True)
    x_std = {k: v.contiguous() for k, v in x_cl.items()}
    out_cl = selective_scan_torch(**x_cl)
    assert out_cl.stride() == x_cl["u"].stride()  # (B, L, D) memory in, (B, L, D) memory out
    assert selective_scan_torch(**x_std).is_contiguous()
    torch.testing.assert_close(out_cl, selective_scan_torch(**x_std), rtol=1e-6, atol=1e-6)


def test_backward_twice_with_retained_graph() -> None:
    x = _inputs(length=8)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    out = selective_scan_torch(**leaves).sum()
    out.backward(retain_graph=True)
    first = {k: v.grad.clone() for k, v in leaves.items()}
    out.backward()
    for k, v in leaves.items():
        torch.testing.assert_close(v.grad, 2 * first[k])


def test_dispatch_on_cpu_uses_torch_path() -> None:
    x = _inputs()
    assert torch.equal(selective_scan(**x), selective_scan_torch(**x))


def test_bf16_inputs_scan_in_fp32() -> None:
    x = _inputs(length=16)
    out = selective_scan_torch(**{k: v.bfloat16() for k, v in x.items()})
    assert out.dtype == torch.bfloat16
    ref = selective_scan_reference(**{k: v.bfloat16().double() for k, v in x.items()})
    torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=5e-2)  # upstream's bf16 tolerance


def test_mamba_block_shapes_and_causality() -> None:
    torch.manual_seed(0)
    block = MambaBlock(16)
    assert block.dt_rank == 1 and block.d_inner == 32 and block.A_log.shape == (32, 16)
    x = torch.randn(3, 10, 16)
    y = block(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] += 1.0  # changing later tokens must not change earlier outputs (causal conv + scan)
    torch.testing.assert_close(block(x2)[:, :6], y[:, :6])


def _block_reference(block: MambaBlock, x: torch.Tensor) -> torch.Tensor:
    """MambaBlock written as mamba-ssm's slow path: Conv1d on (N, C, L), the reference scan."""
    length = x.shape[1]
    u, z = block.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    u = F.silu(block.conv1d(u)[..., :length])
    dt, Bm, Cm = torch.split(block.x_proj(u.transpose(1, 2)), [block.dt_rank, block.d_state, block.d_state], dim=-1)
    delta = (dt @ block.dt_proj.weight.t()).transpose(1, 2)
    # A, D and the bias go in as float32 in both (mamba-ssm's kernel wants them so)
    y = selective_scan_reference(u, delta, -torch.exp(block.A_log.float()), Bm.transpose(1, 2), Cm.transpose(1, 2),
                                 block.D.float(), z, delta_bias=block.dt_proj.bias.float(), delta_softplus=True)
    return block.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize("length", [1, 2, 3, 60])
def test_mamba_block_matches_plain_formulation(length: int) -> None:
    """Same function and same gradients as the block written the plain way (float64)."""
    torch.manual_seed(0)
    block = MambaBlock(16).double()
    x = torch.randn(3, length, 16, dtype=torch.float64)
    grads = []
    for fn in (block, lambda t: _block_reference(block, t)):
        block.zero_grad()
        xi = x.clone().requires_grad_()
        out = fn(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        grads.append((out.detach(), xi.grad, {k: p.grad.clone() for k, p in block.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-9)
    for k in grads[1][2]:
        torch.testing.assert_close(grads[0][2][k], grads[1][2][k], rtol=1e-9, atol=1e-9, msg=f"grad of {k}")


def test_channel_attention_is_eq22_as_written() -> None:
    """Soft(-E) as computed equals Soft(max_j E - E) of eq. 22, values and gradients."""
    torch.manual_seed(0)
    ca = ChannelAttention(5, 4).double()
    with torch.no_grad():
        ca.lam.fill_(0.7)
    f = torch.randn(3, 5, 3, 3, dtype=torch.float64)

    def literal(t: torch.Tensor) -> torch.Tensor:
        q, k, v = ca.q(t).flatten(2), ca.k(t).flatten(2), ca.v(t).flatten(2)
        e = q @ k.transpose(1, 2)
        a = torch.softmax(e.amax(dim=-1, keepdim=True) - e, dim=-1) @ v
        return (ca.lam * a + v).reshape(3, -1, 3, 3)

    outs = []
    for fn in (ca, literal):
        fi = f.clone().requires_grad_()
        out = fn(fi)
        out.pow(2).sum().backward()
        outs.append((out.detach(), fi.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the PyTorch scan on GPU is checked there")
def test_torch_scan_on_cuda_matches_cpu() -> None:
    """Without mamba-ssm, CUDA tensors run the PyTorch scan: it must work there as on CPU."""
    x = _inputs(b=4, d=32, n=16, length=81, channels_last=True)
    w = torch.randn(4, 32, 81)
    cpu, g_cpu = _value_and_grads(selective_scan_torch, x, w)
    gpu, g_gpu = _value_and_grads(selective_scan_torch, {k: v.cuda() for k, v in x.items()}, w.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    for k in NAMES:
        torch.testing.assert_close(g_gpu[k].cpu(), g_cpu[k], rtol=1e-3, atol=1e-3, msg=f"grad of {k}")


def test_matches_mamba_ssm_kernel() -> None:
    fn = fused_scan_fn()
    if fn is None:
        pytest.skip("mamba_ssm does not import here (CPU machine or no compiled selective_scan_cuda); "
                    "the fused kernel is optional and only used on CUDA")
    if not torch.cuda.is_available():
        pytest.skip("mamba_ssm imports but no CUDA device: its kernel runs on CUDA only")
    x = {k: v.cuda() for k, v in _inputs(b=4, d=32, n=16, length=81).items()}
    # upstream's fp32 kernel-vs-ref tolerances
    torch.testing.assert_close(fn(**x, delta_softplus=True), selective_scan_torch(**x), rtol=6e-4, atol=2e-3)
    w = torch.randn(4, 32, 81, device="cuda")
    _, g_kernel = _value_and_grads(lambda **a: fn(**a, delta_softplus=True), x, w)
    _, g_ours = _value_and_grads(selective_scan_torch, x, w)
    for k in NAMES:
        scale = max(g_ours[k].abs().max().item(), 1.0)
        torch.testing.assert_close(g_kernel[k], g_ours[k], rtol=6e-4, atol=2e-3 * scale, msg=f"grad of {k}")
