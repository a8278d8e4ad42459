#!/usr/bin/env bash
# GPU check (issue 16): one prepared run for a lent CUDA machine, writing docs/bench/gpu.md.
#
#   scripts/gpu_check.sh              # CUDA: about 8 minutes; rerun it to finish the kernel build
#   scripts/gpu_check.sh --cpu        # the same steps on the CPU, small sizes (CI: tests/test_gpu_check.py)
#
# The lent machines have their own PyTorch (/opt/torch/.venv), no network, no GDAL and no mamba-ssm, so
# everything else comes with the tree (scripts/gpu_vendor/: mamba-ssm's sdist, pytest's wheels).
# Steps, each with its own time limit inside GPU_CHECK_BUDGET seconds (default 480):
#   1. mamba-ssm's selective-scan kernel is compiled for this GPU's architecture only, in the
#      background (setsid), into build/gpu_check/ext; a later run finds it built (or still building);
#   2. the GDAL-free tests (GDAL and QGIS blocked on purpose) run on this machine, CUDA where they use it;
#   3. a training step of the paper network, classify throughput (exact, bf16 and the student) against
#      the bf16 (CUDA) or fp32 (CPU) matmul rate;
#   4. once the kernel is built: the fused scan against our PyTorch scan (values, gradients, time).
# Environment: PYTHON (default /opt/torch/.venv/bin/python when present, else python3),
# GPU_CHECK_REPORT (default docs/bench/gpu.md; also copied to $OUT when set), GPU_CHECK_BUDGET,
# GPU_CHECK_TESTS (pytest selection, default below), GPU_CHECK_PYTEST_ARGS (extra pytest arguments),
# GPU_CHECK_K (a pytest -k expression), GPU_CHECK_STEPS (default "tests bench scan").
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=cuda
[ "${1:-}" = "--cpu" ] && MODE=cpu
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python
else PY=python3; fi
WORK=${GPU_CHECK_WORK:-$ROOT/build/gpu_check}
REPORT=${GPU_CHECK_REPORT:-$ROOT/docs/bench/gpu.md}
BUDGET=${GPU_CHECK_BUDGET:-480}
VENDOR=$ROOT/scripts/gpu_vendor
MAMBA_SDIST=$VENDOR/mamba_ssm-2.3.2.post1.tar.gz
# Test files that import neither GDAL nor QGIS (checked: the run blocks both, so a file that needs
# them fails to collect instead of being skipped).
TESTS=${GPU_CHECK_TESTS:-"tests/test_selective_scan.py tests/test_network_branches.py tests/test_network_bdgf.py
 tests/test_diffusion_unet.py tests/test_diffusion_forward.py tests/test_paper_equations.py tests/test_modelfile.py
 tests/test_patches.py tests/test_training.py tests/test_oom.py tests/test_dense_net.py"}
STEPS=${GPU_CHECK_STEPS:-tests bench scan}
KARGS=()
[ -n "${GPU_CHECK_K:-}" ] && KARGS=(-k "$GPU_CHECK_K")
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

mkdir -p "$WORK/site" "$WORK/py" "$WORK/block/osgeo" "$WORK/block/qgis" "$WORK/results"
rm -f "$WORK"/results/*
for m in osgeo qgis; do
    echo "raise ImportError('$m is blocked by scripts/gpu_check.sh: this check runs without it')" \
        > "$WORK/block/$m/__init__.py"
done
# pytest from its wheels when this Python has none (pure-Python wheels are zip archives)
if ! "$PY" -c "import pytest" 2>/dev/null && [ ! -f "$WORK/site/.done" ]; then
    for w in "$VENDOR"/*.whl; do "$PY" -m zipfile -e "$w" "$WORK/site"; done
    touch "$WORK/site/.done"
fi
export PYTHONPATH="$WORK/block:$ROOT:$WORK/site:$WORK/py:$WORK/ext${PYTHONPATH:+:$PYTHONPATH}"
export GPU_CHECK_MODE=$MODE GPU_CHECK_RESULTS=$WORK/results

# 1. the kernel build, in the background, for this GPU only
BUILD_STATE="skipped (CPU mode)"
if [ "$MODE" = cuda ]; then
    if [ -f "$WORK/ext/build.ok" ]; then BUILD_STATE="built earlier"
    elif [ -f "$WORK/build.pid" ] && kill -0 "$(cat "$WORK/build.pid")" 2>/dev/null; then BUILD_STATE="still building (started earlier)"
    else
        rm -rf "$WORK/mamba_src" "$WORK/py/mamba_ssm" && mkdir -p "$WORK/mamba_src" "$WORK/ext"
        tar xzf "$MAMBA_SDIST" -C "$WORK/mamba_src" --strip-components 1
        # the package root imports Mamba2/Mamba3 and model classes (tilelang, transformers...); the scan
        # interface needs none of them, so the overlay keeps the package with a root that imports nothing
        cp -r "$WORK/mamba_src/mamba_ssm" "$WORK/py/mamba_ssm"
        echo '__version__ = "2.3.2.post1"' > "$WORK/py/mamba_ssm/__init__.py"
        cat > "$WORK/build_scan.py" <<'EOF'
"""Compile mamba-ssm's selective_scan_cuda for this GPU's architecture only (setup.py builds for ten)."""
import os
import sys
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

src, out = Path(sys.argv[1]), Path(sys.argv[2])
major, minor = torch.cuda.get_device_capability()
os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
# leave two cores to the tests and the benchmark that run meanwhile
os.environ.setdefault("MAX_JOBS", str(max(1, (os.cpu_count() or 4) - 2)))
names = ["selective_scan.cpp"] + [f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")] + [
    f"selective_scan_bwd_{t}_{k}.cu" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")]
cuda_flags = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]
load(name="selective_scan_cuda", sources=[str(src / "csrc/selective_scan" / n) for n in names],
     extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=cuda_flags,
     extra_include_paths=[str(src / "csrc/selective_scan")], build_directory=str(out), verbose=True)
(out / "build.ok").write_text(f"sm_{major}{minor}\n")
EOF
        setsid nohup "$PY" "$WORK/build_scan.py" "$WORK/mamba_src" "$WORK/ext" > "$WORK/build.log" 2>&1 < /dev/null &
        echo $! > "$WORK/build.pid"
        date +%s > "$WORK/build.start"
        BUILD_STATE="started in this run"
    fi
fi
echo "kernel build: $BUILD_STATE"

# 2. the GDAL-free tests
if [[ " $STEPS " == *" tests "* ]]; then
    T=$(( $(left) * 2 / 5 ))
    # shellcheck disable=SC2086  # the selection and the extra arguments are word lists
    (cd "$ROOT" && timeout "$T" "$PY" -m pytest -o addopts="" -p no:cacheprovider -p no:pytest_qgis -q -m "not slow and not bench" \
        "${KARGS[@]}" ${GPU_CHECK_PYTEST_ARGS:-} $TESTS) > "$WORK/results/tests.log" 2>&1
    echo $? > "$WORK/results/tests.rc"
    tail -3 "$WORK/results/tests.log"
fi

# 3. training step and classify throughput
cat > "$WORK/bench.py" <<'EOF'
"""Training step and classify throughput of the paper network on this machine (see scripts/gpu_check.sh)."""
import json
import os
import platform
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bdgf_core.bdgf_model import BDGFPredictor
from bdgf_core.network.bdgf import BDGFConfig, BDGFNet
from bdgf_core.network.selective_scan import fused_scan_fn
from bdgf_core.network.student import StudentNet
from bdgf_core.patchconv import patches
from bdgf_core.student import predict_dense

cuda = os.environ["GPU_CHECK_MODE"] == "cuda"
dev = "cuda" if cuda else "cpu"
res = {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "CPU",
       "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
       "fused_scan": fused_scan_fn() is not None}
# the paper network on CUDA; on the CPU (CI) a narrow one, so that the step checks the code, not the speed
bands, sar, feats, classes = (60, 2, 32, 7) if cuda else (12, 2, 8, 7)
side = 256 if cuda else 8  # block side (pixels)


def sync():
    if cuda:
        torch.cuda.synchronize()


def rate(fn, pixels, repeats=3):
    fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(pixels / (time.perf_counter() - t))
    return float(np.median(out))


# the matmul rate: bf16 on CUDA, fp32 on the CPU
n = 8192 if cuda else 512
dt = torch.bfloat16 if cuda else torch.float32
a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
res["matmul"] = {"dtype": str(dt).replace("torch.", ""), "n": n,
                 "flop_per_s": rate(lambda: a @ b, 1) * 2 * n ** 3}
del a, b
torch.manual_seed(0)
net = BDGFNet(bands, sar, feats, classes, BDGFConfig()).to(dev)
x = [torch.randn(16, c, 9, 9, device=dev) for c in (bands, sar, feats)]
net.eval()
with torch.inference_mode(), FlopCounterMode(display=False) as fc:
    net(*x)
res["flop_per_pixel"] = fc.get_total_flops() / 16
# training step: forward + loss (eq. 29) + backward + Adam, bf16 autocast on CUDA as training does
batch = 256 if cuda else 8
net.train()
opt = torch.optim.Adam(net.parameters(), 4e-4)
xb = [torch.randn(batch, c, 9, 9, device=dev) for c in (bands, sar, feats)]
y = torch.randint(0, classes, (batch,), device=dev)


def step():
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    with ctx:
        out = net(*xb)
    loss, _ = net.loss(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()


res["train_samples_per_s"] = rate(step, batch)
res["train_batch"] = batch
if cuda:
    res["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
# classify: the exact path (bf16 autocast on CUDA, as classify does), bf16 on the CPU, the student
net.eval()
stats = {"spectral_mean": np.zeros(bands, np.float32), "spectral_std": np.ones(bands, np.float32),
         "sar_mean": np.zeros(sar, np.float32), "sar_std": np.ones(sar, np.float32)}
rng = np.random.default_rng(0)
blk = [rng.standard_normal((c, side + 8, side + 8)).astype(np.float32) for c in (bands, sar, feats)]
pred = BDGFPredictor(net, stats, list(range(1, classes + 1)))
exact = pred.predict_block(*blk)
res["classify_px_per_s"] = rate(lambda: pred.predict_block(*blk), side * side)
res["classify_batch"] = pred.batch_size
pred.precision = "bf16"
fast = pred.predict_block(*blk)
res["bf16_max_prob_diff"] = float(np.abs(fast - exact).max())
res["classify_bf16_px_per_s"] = rate(lambda: pred.predict_block(*blk), side * side)
student = StudentNet(bands + sar + feats, classes, 9).to(dev).eval()
xs = torch.from_numpy(np.concatenate(blk)).to(dev)
res["student_px_per_s"] = rate(lambda: predict_dense(student, xs, 9), side * side)
res["student_flop_per_pixel"] = student.flops_per_pixel()
# the student's dense pass against its per-patch pass (the same function)
with torch.inference_mode():
    per_patch = torch.softmax(student(patches(xs[:, :16, :16], 9))[:, :, 0, 0].float(), 1).T.reshape(-1, 8, 8)
res["student_dense_vs_patch"] = float((torch.from_numpy(predict_dense(student, xs[:, :16, :16], 9))
                                       - per_patch.cpu()).abs().max())
json.dump(res, open(os.path.join(os.environ["GPU_CHECK_RESULTS"], "bench.json"), "w"), indent=1)
print(json.dumps(res))
EOF
if [[ " $STEPS " == *" bench "* ]]; then
    T=$(( $(left) - 90 ))
    [ "$T" -lt 30 ] && T=30
    (cd "$ROOT" && timeout "$T" "$PY" "$WORK/bench.py") > "$WORK/results/bench.log" 2>&1
    echo $? > "$WORK/results/bench.rc"
    tail -2 "$WORK/results/bench.log"
fi

# 4. the fused scan against ours, when the build has finished (waits for it while time is left)
if [ "$MODE" = cuda ]; then
    while [ ! -f "$WORK/ext/build.ok" ] && [ "$(left)" -gt 60 ] && [ -f "$WORK/build.pid" ] \
          && kill -0 "$(cat "$WORK/build.pid")" 2>/dev/null; do sleep 10; done
fi
cat > "$WORK/scan.py" <<'EOF'
"""mamba-ssm's fused selective scan against bdgf_core's PyTorch scan: values, gradients, time."""
import json
import os
import time

import torch

from bdgf_core.network.selective_scan import fused_scan_fn, selective_scan_torch

fn = fused_scan_fn()
res = {"fused_imports": fn is not None}
if fn is not None and torch.cuda.is_available():
    torch.manual_seed(0)
    b, d, n, length = 256, 128, 16, 60  # the spectral scan of the paper network (expand 2, d_state 16, 60 bands)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        g = lambda *s: torch.randn(*s, device="cuda")
        u, delta, z = g(b, d, length), 0.5 * g(b, d, length), g(b, d, length)
        A, B, C, D, bias = -torch.rand(d, n, device="cuda") - 0.5, g(b, n, length), g(b, n, length), g(d), g(d) * 0.1
        args = [t.to(dt).requires_grad_() if t.dim() == 3 else t.float().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        ref_args = [t.detach().float().requires_grad_() for t in args]
        y = fn(*args[:7], args[7], True)
        y_ref = selective_scan_torch(*ref_args[:7], ref_args[7], True)
        w = torch.randn_like(y_ref)
        (y.float() * w).sum().backward()
        (y_ref * w).sum().backward()
        grads = max(float((a.grad.float() - r.grad).abs().max() / (r.grad.abs().max() + 1e-12))
                    for a, r in zip(args, ref_args))
        times = {}
        for name, f, xs in (("fused", fn, args), ("torch", selective_scan_torch, ref_args)):
            for _ in range(2):
                f(*[t.detach() for t in xs[:7]], xs[7].detach(), True)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(10):
                f(*[t_.detach() for t_ in xs[:7]], xs[7].detach(), True)
            torch.cuda.synchronize()
            times[name] = (time.perf_counter() - t) / 10 * 1e3
        out[str(dt).replace("torch.", "")] = {
            "max_abs_diff": float((y.float() - y_ref).abs().max()), "max_rel_grad_diff": grads,
            "fused_ms": times["fused"], "torch_ms": times["torch"]}
    res["compare"] = out
json.dump(res, open(os.path.join(os.environ["GPU_CHECK_RESULTS"], "scan.json"), "w"), indent=1)
print(json.dumps(res))
EOF
if [[ " $STEPS " == *" scan "* ]]; then
    (cd "$ROOT" && timeout 60 "$PY" "$WORK/scan.py") > "$WORK/results/scan.log" 2>&1
    echo $? > "$WORK/results/scan.rc"
    tail -1 "$WORK/results/scan.log"
fi

# report
BUILD_NOW=$BUILD_STATE
if [ "$MODE" = cuda ]; then
    if [ -f "$WORK/ext/build.ok" ]; then BUILD_NOW="built for $(cat "$WORK/ext/build.ok") ($BUILD_STATE)"
    elif [ -f "$WORK/build.pid" ] && kill -0 "$(cat "$WORK/build.pid")" 2>/dev/null; then
        BUILD_NOW="still building after $(( $(date +%s) - $(cat "$WORK/build.start") )) s: run this script again to finish the check"
    else BUILD_NOW="failed: $(grep -m1 -iE 'error' "$WORK/build.log" | cut -c1-200)"; fi
fi
export BUILD_NOW REPORT
cat > "$WORK/report.py" <<'EOF'
"""docs/bench/gpu.md from the results of scripts/gpu_check.sh."""
import json
import os
import time
from pathlib import Path

r = Path(os.environ["GPU_CHECK_RESULTS"])


def load(name):
    p = r / name
    return json.loads(p.read_text()) if p.exists() else None


def rc(name):
    p = r / f"{name}.rc"
    return p.read_text().strip() if p.exists() else "not run"


mode = os.environ["GPU_CHECK_MODE"]
bench, scan = load("bench.json"), load("scan.json")
tests = (r / "tests.log").read_text().strip().splitlines() if (r / "tests.log").exists() else []
lines = ["# GPU check", "", f"Written by `scripts/gpu_check.sh{' --cpu' if mode == 'cpu' else ''}` on "
         f"{time.strftime('%Y-%m-%d %H:%M')} (mode {mode}); do not edit by hand.", ""]
if bench:
    lines += [f"Device: {bench['device']}; torch {bench['torch']}, Python {bench['python']}, "
              f"{bench['threads']} threads.", ""]
lines += [f"- mamba-ssm selective-scan kernel: {os.environ['BUILD_NOW']}",
          f"- GDAL-free tests (GDAL and QGIS blocked), exit code {rc('tests')}: "
          f"{tests[-1] if tests else 'no output'}"]
if bench:
    mm = bench["matmul"]["flop_per_s"]
    f = bench["flop_per_pixel"]
    lines += [f"- {bench['matmul']['dtype']} matmul ({bench['matmul']['n']}^2): {mm / 1e12:.2f} TFLOP/s",
              f"- {'paper' if mode == 'cuda' else 'narrow CPU-mode'} network: {f / 1e6:.1f} MFLOP per pixel "
              "(per-patch forward); fused scan in use: "
              f"{bench['fused_scan']}", "",
              "| what | rate | effective FLOP/s (per-patch FLOPs x rate) | share of the matmul rate |",
              "|---|---|---|---|",
              f"| training step, batch {bench['train_batch']} (forward + loss + backward + Adam) | "
              f"{bench['train_samples_per_s']:.0f} samples/s | {3 * f * bench['train_samples_per_s'] / 1e12:.3f} T "
              f"(3 x forward) | {3 * f * bench['train_samples_per_s'] / mm:.1%} |"]
    for k, name in (("classify_px_per_s", f"classify, exact path (batch {bench['classify_batch']})"),
                    ("classify_bf16_px_per_s", "classify, --fast bf16"),
                    ("student_px_per_s", "classify, --fast student")):
        lines.append(f"| {name} | {bench[k]:.0f} pixels/s | {f * bench[k] / 1e12:.3f} T | {f * bench[k] / mm:.1%} |")
    lines += ["", f"bf16 against fp32 probabilities (random weights): largest difference "
                  f"{bench['bf16_max_prob_diff']:.2g}. Student: {bench['student_flop_per_pixel'] / 1e6:.2f} MFLOP "
                  f"per pixel; its dense pass against its per-patch pass: {bench['student_dense_vs_patch']:.1g}."]
    if "train_peak_gib" in bench:
        lines.append(f"Peak GPU memory of the training step: {bench['train_peak_gib']:.2f} GiB.")
else:
    lines.append(f"- training and throughput: exit code {rc('bench')} (see build/gpu_check/results/bench.log)")
lines += ["", "## Fused selective scan against the PyTorch scan", ""]
if scan and scan.get("compare"):
    lines += ["(B 256, D 128, N 16, L 60; upstream's kernel-vs-reference tolerances: fp32 rtol 6e-4 / atol 2e-3, "
              "bf16 3e-2 / 5e-2)", "", "| inputs | max abs diff | max relative gradient diff | fused ms | PyTorch ms |",
              "|---|---|---|---|---|"]
    for k, v in scan["compare"].items():
        lines.append(f"| {k} | {v['max_abs_diff']:.2g} | {v['max_rel_grad_diff']:.2g} | {v['fused_ms']:.2f} | "
                     f"{v['torch_ms']:.2f} |")
else:
    lines.append("Not compared in this run: " + ("CPU mode." if mode == "cpu" else
                                                  "the kernel is not built (see above)."))
text = "\n".join(lines) + "\n"
dest = Path(os.environ["REPORT"])
dest.parent.mkdir(parents=True, exist_ok=True)
tmp = dest.with_name(f".{dest.name}.tmp")
tmp.write_text(text)
os.replace(tmp, dest)
if os.environ.get("OUT"):
    Path(os.environ["OUT"], "gpu.md").write_text(text)
    for p in [r / n for n in ("tests.log", "bench.log", "scan.log")] + [r.parent / "build.log"]:
        if p.exists():
            Path(os.environ["OUT"], p.name).write_text(p.read_text(errors="replace")[-20000:])
print(text)
EOF
"$PY" "$WORK/report.py"
# the exit status: every step that ran succeeded
for step in $STEPS; do
    [ "$(cat "$WORK/results/$step.rc" 2>/dev/null || echo 0)" = 0 ] || exit 1
done
exit 0
