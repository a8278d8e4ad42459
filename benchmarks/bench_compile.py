"""torch.compile on the CPU for classification (issue 16: "torch.compile where it helps"): eager against compiled.

The BDGF network as a user trains it (the dialog's defaults: paper branches, edge-aware patches)
and the paper's network (--no-adaptive), random weights (rates do not depend on them), a batch of
256 patches of 9 x 9 (60 + 2 bands, 32 feature channels), inference mode, one torch thread.
Compiling is timed apart (the first call); then eager and compiled run interleaved and their
pixels per CPU-second are compared, with the largest difference of their probabilities.

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench_common import ROOT, cpu_model

DOCS = ROOT / "docs" / "bench"


def measure(adaptive: bool, repeats: int, batch: int) -> dict:
    import torch

    from bdgf_core.network.bdgf import BDGFConfig, BDGFNet

    torch.manual_seed(0)
    net = BDGFNet(60, 2, 32, 7, BDGFConfig(adaptive=adaptive)).eval()
    if net.edge is not None:  # random normal inputs differ by 2 per band on average: some neighbours pulled
        net.edge.set_tau([2.0, 2.0])
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(batch, c, 9, 9, generator=g) for c in (60, 2, 32)]

    def eager():
        with torch.inference_mode():
            return torch.softmax(net(*x).logits, -1)

    compiled_net = torch.compile(net, dynamic=False)

    def compiled():
        with torch.inference_mode():
            return torch.softmax(compiled_net(*x).logits, -1)

    ref = eager()
    t0, c0 = time.perf_counter(), time.process_time()
    got = compiled()
    compile_wall, compile_cpu = time.perf_counter() - t0, time.process_time() - c0
    diff = float((got - ref).abs().max())
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for k, fn in (("eager", eager), ("compiled", compiled)):
            c = time.process_time()
            fn()
            rates[k].append(batch / (time.process_time() - c))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"adaptive": adaptive, "batch": batch, "compile_wall_s": compile_wall, "compile_cpu_s": compile_cpu,
            "max_prob_diff": diff, "px_per_cpu_s": {k: [float(min(v)), med[k], float(max(v))] for k, v in rates.items()},
            "speedup": med["compiled"] / med["eager"],
            "break_even_px": compile_cpu / max(1 / med["eager"] - 1 / med["compiled"], 1e-12)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=str(DOCS / "compile.md"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = [measure(a, args.repeats, args.batch) for a in (True, False)]
    for r in rows:
        print(json.dumps(r), flush=True)
    lines = ["# torch.compile on the CPU for classification (issue 16)", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --repeats {args.repeats} "
             f"--batch {args.batch}`", "",
             f"Machine: {cpu_model()}, torch {torch.__version__}, 1 torch thread; {time.strftime('%Y-%m-%d')}, "
             f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end. Random weights, a batch of "
             f"{args.batch} patches of 9 x 9 (60 + 2 bands, 32 feature channels), inference mode; rates are pixels "
             "per CPU-second, min / median / max of the interleaved repeats.", "",
             "| network | compile (first call) CPU s | eager px/CPU-s | compiled px/CPU-s | compiled / eager "
             "| pixels to repay the compile | largest probability difference |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "the dialog's default (edge-aware patches)" if r["adaptive"] else "the paper's network (--no-adaptive)"
        e, c = r["px_per_cpu_s"]["eager"], r["px_per_cpu_s"]["compiled"]
        repay = f"{r['break_even_px']:.0f}" if r["speedup"] > 1 else "never"
        lines.append(f"| {name} | {r['compile_cpu_s']:.1f} | {e[0]:.0f} / {e[1]:.0f} / {e[2]:.0f} | "
                     f"{c[0]:.0f} / {c[1]:.0f} / {c[2]:.0f} | **{r['speedup']:.2f}x** | {repay} | "
                     f"{r['max_prob_diff']:.1e} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
