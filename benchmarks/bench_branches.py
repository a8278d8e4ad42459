"""CPU cost of the BDGF branches (issue 4): forward + backward time per batch.

    python benchmarks/bench_branches.py [--threads 1 2] [--repeats 11] [--out docs/bench/branches.md]

Size: the paper's training setting, batch 64, 9x9 patches, 60 spectral bands, 2 SAR bands,
32 diffusion-feature channels, embedding 64, 10 classes, ``BDGFConfig`` defaults otherwise
(guidance and mutual learning on). One step = forward, the loss of eq. 29 and backward (no
optimiser step), in train mode, on random data (the cost does not depend on the values).

Cases: the full net, each single-branch net (``BDGFConfig(use_cnn=..., use_transformer=...,
use_mamba=...)``), and the same with the previous Mamba implementation (commit e918189: the
autograd loop scan, the Conv1d block, the amax of eq. 22; kept verbatim below) swapped in, plus
the selective scan alone at the Mamba branch's sizes (B 64, d_inner 128, d_state 16; spectral
L 60, SAR L 2; inputs laid out as the block passes them), and, as a diagnostic, the Mamba-only
net with the scan replaced by a trivial op (what the branch costs besides the scan). The cases
run interleaved, two steps of each in turn (the first untimed, so that no case pays for the
memory the case before it freed), so that load from other processes hits them alike; each gets
warm-up rounds, then the median, min and max of the wall-clock time over the repeats,
and the median process CPU time (steadier than wall clock on a shared machine). Writes the
Markdown report given by --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cpu_model  # noqa: E402

from bdgf_core.network import mamba as mamba_module  # noqa: E402
from bdgf_core.network.bdgf import BDGFConfig, BDGFNet  # noqa: E402
from bdgf_core.network.mamba import ChannelAttention, MambaBlock  # noqa: E402
from bdgf_core.network.selective_scan import selective_scan_torch  # noqa: E402

BATCH, PATCH, BANDS, SAR, FEATURES, CLASSES = 64, 9, 60, 2, 32, 10


# --- previous implementation (commit e918189), verbatim apart from names --------------------

def _previous_prepare(u: Tensor, delta: Tensor, A: Tensor, delta_bias: Optional[Tensor],
                      delta_softplus: bool) -> tuple[Tensor, Tensor, Tensor]:
    dt = torch.promote_types(u.dtype, torch.float32)
    u, delta = u.to(dt), delta.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A.to(dt)


def _previous_expand_groups(M: Tensor, d: int) -> Tensor:
    if M.dim() == 3:
        return M.unsqueeze(1)
    return M.repeat_interleave(d // M.shape[1], dim=1)


def _previous_finish(y: Tensor, u: Tensor, D: Optional[Tensor], z: Optional[Tensor], in_dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(in_dtype)


def previous_selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                            D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                            delta_bias: Optional[Tensor] = None, delta_softplus: bool = True) -> Tensor:
    """The scan before issue 4: an autograd loop over ``unbind`` views of (L, B, D, N) tensors."""
    in_dtype = u.dtype
    bsz, d, length = u.shape
    u, delta, A = _previous_prepare(u, delta, A, delta_bias, delta_softplus)
    Bx = _previous_expand_groups(B.to(u.dtype), d)
    dA = torch.exp(torch.einsum("bdl,dn->lbdn", delta, A))
    dBu = (delta * u).permute(2, 0, 1).unsqueeze(-1) * Bx.permute(3, 0, 1, 2)
    if C.dim() == 3:
        Cl = C.to(u.dtype).permute(2, 0, 1).unsqueeze(-1)
        rows = bsz
    else:
        Cx = _previous_expand_groups(C.to(u.dtype), d)
        Cl = Cx.permute(3, 0, 1, 2).reshape(length, bsz * d, -1, 1)
        rows = bsz * d
    h = torch.zeros_like(dA[0])
    ys = []
    for a_l, b_l, c_l in zip(dA.unbind(0), dBu.unbind(0), Cl.unbind(0)):
        h = torch.addcmul(b_l, a_l, h)
        ys.append(torch.bmm(h.reshape(rows, -1, h.shape[-1]), c_l))
    y = torch.cat(ys, dim=-1).reshape(bsz, d, length)
    return _previous_finish(y, u, D, z, in_dtype)


def _previous_block_forward(self: MambaBlock, x: Tensor) -> Tensor:
    length = x.shape[1]
    xz = self.in_proj(x).transpose(1, 2)
    u, z = xz.chunk(2, dim=1)
    u = F.silu(self.conv1d(u)[..., :length])
    x_dbl = self.x_proj(u.transpose(1, 2))
    dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
    delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
    A = -torch.exp(self.A_log.float())
    y = previous_selective_scan(u, delta, A, Bm.transpose(1, 2).contiguous(), Cm.transpose(1, 2).contiguous(),
                                self.D.float(), z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
    return self.out_proj(y.transpose(1, 2))


def _previous_attention_forward(self: ChannelAttention, f: Tensor) -> Tensor:
    n, _, p, _ = f.shape
    q, k, v = self.q(f).flatten(2), self.k(f).flatten(2), self.v(f).flatten(2)
    energy = q @ k.transpose(1, 2)
    energy = energy.amax(dim=-1, keepdim=True) - energy
    attn = torch.softmax(energy, dim=-1)
    a = attn @ v
    return (self.lam * a + v).reshape(n, -1, p, p)


@contextmanager
def previous_mamba() -> Iterator[None]:
    """Run the Mamba branch as it was before issue 4 (same modules, same weights)."""
    saved = MambaBlock.forward, ChannelAttention.forward
    MambaBlock.forward, ChannelAttention.forward = _previous_block_forward, _previous_attention_forward
    try:
        yield
    finally:
        MambaBlock.forward, ChannelAttention.forward = saved


@contextmanager
def scan_skipped() -> Iterator[None]:
    """Diagnostic only: the scan replaced by u * z, to show what the branch costs besides it."""
    saved = mamba_module.selective_scan
    mamba_module.selective_scan = lambda u, delta, A, B, C, D=None, z=None, **_: u * z
    try:
        yield
    finally:
        mamba_module.selective_scan = saved


# --- cases ------------------------------------------------------------------------------------

NETS = {  # name -> BDGFConfig switches
    "full net": {},
    "CNN branch only": dict(use_transformer=False, use_mamba=False),
    "transformer branch only": dict(use_cnn=False, use_mamba=False),
    "Mamba branch only": dict(use_cnn=False, use_transformer=False),
}
#: The full net less one branch: full minus these is what each branch adds to a training step.
WITHOUT = {
    "full net without the CNN branch": dict(use_cnn=False),
    "full net without the transformer branch": dict(use_transformer=False),
    "full net without the Mamba branch": dict(use_mamba=False),
}


def net_case(config: dict, previous: bool = False,
             skip_scan: bool = False) -> tuple[Callable[[], None], Callable[[], Tensor]]:
    """A training step (forward, loss, backward) of a freshly seeded net; also its logits fn."""
    g = torch.Generator().manual_seed(0)
    spec = torch.randn(BATCH, BANDS, PATCH, PATCH, generator=g)
    sar = torch.randn(BATCH, SAR, PATCH, PATCH, generator=g)
    dif = torch.randn(BATCH, FEATURES, PATCH, PATCH, generator=g)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
    torch.manual_seed(0)
    net = BDGFNet(BANDS, SAR, FEATURES, CLASSES, BDGFConfig(patch=PATCH, **config)).train()

    def step() -> None:
        with previous_mamba() if previous else scan_skipped() if skip_scan else nullcontext():
            loss, _ = net.loss(net(spec, sar, dif), labels)
            loss.backward()
        net.zero_grad(set_to_none=True)

    def logits() -> Tensor:
        net.eval()
        with torch.no_grad(), previous_mamba() if previous else nullcontext():
            out = net(spec, sar, dif).logits
        net.train()
        return out

    return step, logits


def scan_case(length: int, previous: bool) -> Callable[[], None]:
    """Selective scan alone, forward + backward, at the Mamba branch's sizes."""
    b, d, n = BATCH, 128, 16  # d_inner = expand 2 x embed 64; d_state 16
    g = torch.Generator().manual_seed(length)
    seq = lambda: torch.randn(b, length, d, generator=g).transpose(1, 2)  # noqa: E731  (B, L, D) memory
    x = dict(u=seq(), delta=seq() * 0.5, A=-torch.rand(d, n, generator=g) - 0.1,
             B=torch.randn(b, length, n, generator=g).transpose(1, 2),
             C=torch.randn(b, length, n, generator=g).transpose(1, 2),
             D=torch.randn(d, generator=g), z=seq(), delta_bias=torch.randn(d, generator=g) * 0.1)
    leaves = {k: v.requires_grad_() for k, v in x.items()}
    weights = torch.randn(b, d, length, generator=g)
    fn = previous_selective_scan if previous else selective_scan_torch

    def step() -> None:
        (fn(**leaves) * weights).sum().backward()
        for v in leaves.values():
            v.grad = None

    return step


def build_cases() -> dict[str, Callable[[], None]]:
    cases = {}
    for name, config in NETS.items():
        cases[name] = net_case(config, previous=False)[0]
        if config.get("use_mamba", True):
            cases[f"{name}, previous Mamba"] = net_case(config, previous=True)[0]
    cases["Mamba branch only, scan skipped (diagnostic)"] = net_case(NETS["Mamba branch only"], skip_scan=True)[0]
    for name, config in WITHOUT.items():
        cases[name] = net_case(config)[0]
    for label, length in (("spectral", BANDS), ("SAR", SAR)):
        cases[f"scan alone, {label} (L {length})"] = scan_case(length, previous=False)
        cases[f"scan alone, {label} (L {length}), previous"] = scan_case(length, previous=True)
    return cases


def same_function() -> float:
    """Largest |logit| difference between the current and the previous Mamba implementations."""
    worst = 0.0
    for name, config in NETS.items():
        if config.get("use_mamba", True):
            now, before = net_case(config, False)[1](), net_case(config, True)[1]()
            worst = max(worst, (now - before).abs().max().item())
    return worst


def step_flops(cases: dict[str, Callable[[], None]]) -> dict[str, float]:
    """FLOPs of one step of each net case (torch.utils.flop_counter: matmuls and convolutions,
    forward and backward; the selective scan's element-wise recurrence is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, step in cases.items():
        if name.startswith("scan alone") or "previous" in name or "skipped" in name:
            continue
        with FlopCounterMode(display=False) as counter:
            step()
        out[name] = float(counter.get_total_flops())
    return out


def matmul_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-multiply FLOP/s of this process's CPU time (median), as the machine's yardstick."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        c0 = time.process_time()
        a @ b
        rates.append(2 * n ** 3 / (time.process_time() - c0))
    return statistics.median(rates)


def measure(cases: dict[str, Callable[[], None]], threads: int, warmup: int,
            repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per case: wall-clock and process CPU milliseconds (all threads) of each timed step."""
    torch.set_num_threads(threads)
    times = {k: {"wall": [], "cpu": []} for k in cases}
    for r in range(warmup + repeats):
        for name, step in cases.items():
            step()  # untimed: the timed step must not pay for the memory the case before freed
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            if r >= warmup:
                times[name]["wall"].append((time.perf_counter() - w0) * 1e3)
                times[name]["cpu"].append((time.process_time() - c0) * 1e3)
    return times


# --- report -----------------------------------------------------------------------------------

def ratios(m: dict[str, float]) -> str:
    mamba, cnn, trans = m["Mamba branch only"], m["CNN branch only"], m["transformer branch only"]
    spec, sar = f"scan alone, spectral (L {BANDS})", f"scan alone, SAR (L {SAR})"
    skipped = m["Mamba branch only, scan skipped (diagnostic)"]
    return (f"Mamba-only / CNN-only {mamba / cnn:.2f}, Mamba-only / transformer-only {mamba / trans:.2f}; "
            f"previous / current: Mamba-only net {m['Mamba branch only, previous Mamba'] / mamba:.2f}, "
            f"full net {m['full net, previous Mamba'] / m['full net']:.2f}, "
            f"spectral scan {m[spec + ', previous'] / m[spec]:.2f}, SAR scan {m[sar + ', previous'] / m[sar]:.2f}; "
            f"Mamba-only net with the scan skipped / CNN-only {skipped / cnn:.2f} "
            f"(the scans' share of the Mamba-only net: {1 - skipped / mamba:.0%})")


def flops_section(flops: dict[str, float], cpu: dict[str, float], rate: float, threads: int) -> list[str]:
    """Arithmetic per step, the rate each case reaches, and each branch's share of the full net."""
    out = [f"## Arithmetic and each branch's share of a training step ({threads} thread{'s' if threads > 1 else ''})",
           "", f"fp32 matmul (2048^2) in the same run: {rate / 1e9:.1f} GFLOP/s of CPU time. GFLOP per step from "
           "torch.utils.flop_counter (matmuls and convolutions, forward + backward; the scan's element-wise "
           "recurrence is not counted).", "",
           "| case | GFLOP per step | CPU ms (median) | GFLOP/s of CPU time | share of the matmul rate |",
           "| --- | --- | --- | --- | --- |"]
    for k, f in flops.items():
        out.append(f"| {k} | {f / 1e9:.2f} | {cpu[k]:.1f} | {f / cpu[k] / 1e6:.1f} | {f / cpu[k] * 1e3 / rate:.0%} |")
    full = cpu["full net"]
    out += ["", "What each branch adds to a full training step (full net minus the net without it, CPU medians):", ""]
    for branch in ("CNN", "transformer", "Mamba"):
        key = f"full net without the {branch} branch"
        add, addf = full - cpu[key], flops["full net"] - flops[key]
        out.append(f"- {branch} branch: {add:.1f} ms of {full:.1f} ms ({add / full:.0%}), {addf / 1e9:.2f} GFLOP "
                   f"({addf / flops['full net']:.0%} of the step's arithmetic)")
    scans = cpu[f"scan alone, spectral (L {BANDS})"] + cpu[f"scan alone, SAR (L {SAR})"]
    out += [f"- the two selective scans alone (spectral + SAR, forward + backward): {scans:.1f} ms "
            f"({scans / full:.0%} of the full step)", ""]
    m_only = flops["Mamba branch only"] / cpu["Mamba branch only"] * 1e3 / rate
    c_only = flops["CNN branch only"] / cpu["CNN branch only"] * 1e3 / rate
    out += [f"Reading: the selective scans are {scans / full:.0%} of a training step, so a faster scan can save at "
            "most that. What the Mamba branch costs besides them is arithmetic the paper prescribes: the 3x3 "
            "convolutions of the group channel attention (Q, K, V of eqs. 21-23 for each group member, w_11 of "
            "eq. 24; with the CNN branch on, f_cnn joins the group, which is why the branch adds more GFLOP inside "
            f"the full net than alone), run at {m_only:.0%} of this machine's matmul rate (CNN branch alone: "
            f"{c_only:.0%}). Fewer milliseconds would need less arithmetic, i.e. another network than the paper's.",
            ""]
    return out


def report(results: dict[int, dict[str, dict[str, list[float]]]], args: argparse.Namespace, command: str,
           seconds: float, loads: tuple, max_diff: float, flops: dict[str, float] | None = None,
           rates: dict[int, float] | None = None) -> str:
    out = ["# Branch costs on CPU: forward + backward per batch", "",
           f"Written by `benchmarks/bench_branches.py` on {date.today().isoformat()} in {seconds / 60:.1f} min.", "",
           "Command:", "", "```", command, "```", "",
           f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Linux {platform.release()}; "
           f"Python {platform.python_version()}, torch {torch.__version__}. Load average (1 min) "
           f"{loads[0]:.2f} at the start, {loads[1]:.2f} at the end (other processes shared the cores).", "",
           f"Size: batch {BATCH}, {PATCH}x{PATCH} patches, {BANDS} spectral bands, {SAR} SAR bands, "
           f"{FEATURES} diffusion-feature channels, embedding 64, {CLASSES} classes, BDGFConfig defaults "
           "(guidance and mutual learning on). One step = forward + loss (eq. 29) + backward, train mode. "
           f"{args.warmup} warm-up rounds, then {args.repeats} timed ones; the cases run interleaved (two steps of "
           "each in turn, the first untimed, so that no case pays for the memory the one before it freed), so a "
           "change of load hits them alike. Milliseconds per batch: wall clock "
           "(median, min, max) and the process's CPU time (median, summed over its threads): CPU time does not "
           "count time spent waiting for a core, so it is the steadier measure on a shared machine.", "",
           "\"previous Mamba\" = the same net and weights with the Mamba implementation of commit e918189 "
           "(autograd loop scan, Conv1d block, amax of eq. 22). Largest logit difference between the two: "
           f"{max_diff:.1e} (same function; float32 rounding). \"scan skipped\" is not a valid net: the "
           "scan's output is replaced by u * z, to show what the Mamba branch costs besides the scan.", ""]
    for t, r in results.items():
        wall = {k: statistics.median(v["wall"]) for k, v in r.items()}
        cpu = {k: statistics.median(v["cpu"]) for k, v in r.items()}
        out += [f"## {t} thread{'s' if t > 1 else ''}", "",
                "| case | wall median | wall min | wall max | CPU median |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {k} | {wall[k]:.1f} | {min(v['wall']):.1f} | {max(v['wall']):.1f} | {cpu[k]:.1f} |"
                for k, v in r.items()]
        out += ["", f"Ratios of wall medians: {ratios(wall)}.", "", f"Ratios of CPU medians: {ratios(cpu)}.", ""]
        if flops and rates and t in rates:
            out += flops_section(flops, cpu, rates[t], t)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "branches.md")
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    max_diff = same_function()
    cases = build_cases()
    flops = step_flops(cases)
    results, rates = {}, {}
    for t in args.threads:
        rates[t] = matmul_rate(t)
        results[t] = measure(cases, t, args.warmup, args.repeats)
        m = {k: statistics.median(v["wall"]) for k, v in results[t].items()}
        print(f"{t} thread(s): " + ", ".join(f"{k} {v:.1f} ms" for k, v in m.items()), flush=True)
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    command = f"{env}python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}"
    text = report(results, args, command, time.perf_counter() - t0, (load0, os.getloadavg()[0]), max_diff,
                  flops, rates)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
