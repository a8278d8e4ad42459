"""Classification at scale (issue 5): throughput, FLOP efficiency, peak memory, linear scaling.

    python benchmarks/bench_classify.py [--work DIR] [--repeats 3] [--scale-repeats 1]
        [--parts throughput,memory,scaling-rf,scaling-bdgf,diffusion,diffusion-scaling] [--quick]
    python benchmarks/bench_classify.py --parts throughput-gpu     # on a CUDA machine (not in the default parts)

Scenes: ``generate-scene`` (200 x 200, 60 spectral + 2 SAR bands, and an 8 + 2-band one for the BDGF
and diffusion scaling runs); the large scenes are GDAL VRT mosaics that repeat its rasters (two levels
of VRT, so 10000 x 10000 x 62 bands costs no disk).
Models, made on the 200 x 200 scenes (accuracy does not matter here): BDGF with the paper's network
(patch 9, all branches) trained 2 epochs on ``pretrain --profile fast --steps 2`` features; the random
forest (200 trees, the default) for throughput, 20 trees for the scaling runs and 5 trees for the 1e8
pixels. For the scaling runs (sections 3 and 4): a deliberately small BDGF model file (``tiny_bdgf``:
CNN branch only, patch 3, embedding 8, random weights) and a one-timestep diffusion model with 96-pixel
tiles (``SCALE_DDPM``), so that a 4000 x 4000 scene takes minutes; the streaming code is the same.

Several invocations may run side by side with different ``--parts``: each merges its part into
classify.json when it ends. ``--quick`` is a smoke run (200-600 pixel scenes, scaling parts only).

Memory and time of a whole run are measured in a child process (``child`` below): it imports
everything first, records its resident set and restarts the kernel's peak counter (VmHWM, via
/proc/self/clear_refs), then runs the CLI's ``main`` in the same process; the peak resident memory
reported is VmHWM at the end (Python, torch and GDAL included) and the growth is that minus the
resident set after imports.

Writes docs/bench/classify.md (and classify.json with the raw figures).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cli, cpu_model  # noqa: E402

MARK = "BENCH-RESULT "


# ---------------------------------------------------------------------------------------------
# Scenes without disk: VRT mosaics and windows

def _vrt_xml(src: str, reps_y: int, reps_x: int) -> str:
    from osgeo import gdal

    ds = gdal.Open(src)
    w, h = ds.RasterXSize, ds.RasterYSize
    x0, dx, rx, y0, ry, dy = ds.GetGeoTransform()
    bands = []
    for b in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        dtype = gdal.GetDataTypeName(band.DataType)
        nd = band.GetNoDataValue()
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>{b}</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{j * w}" yOff="{i * h}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            for i in range(reps_y) for j in range(reps_x))
        nodata = f"<NoDataValue>{nd!r}</NoDataValue>" if nd is not None else ""
        bands.append(f'<VRTRasterBand dataType="{dtype}" band="{b}">{nodata}{sources}</VRTRasterBand>')
    srs = ds.GetProjection()
    srs_xml = f"<SRS>{_esc(srs)}</SRS>" if srs else ""
    gt = ", ".join(repr(v) for v in (x0, dx, rx, y0, ry, dy))
    return (f'<VRTDataset rasterXSize="{w * reps_x}" rasterYSize="{h * reps_y}">{srs_xml}'
            f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def mosaic_vrt(src: str | os.PathLike, reps_y: int, reps_x: int, out: str | os.PathLike) -> Path:
    """A VRT repeating ``src`` reps_y x reps_x times (a row VRT, then a VRT of rows: few sources)."""
    out = Path(out)
    row = out.with_name(out.stem + f".row{reps_x}.vrt")
    row.write_text(_vrt_xml(str(Path(src).resolve()), 1, reps_x))
    out.write_text(_vrt_xml(str(row.resolve()), reps_y, 1))
    return out


def window_vrt(src: str | os.PathLike, col: int, row: int, width: int, height: int, out: str | os.PathLike) -> Path:
    from osgeo import gdal

    gdal.Translate(str(out), str(src), format="VRT", srcWin=[col, row, width, height])
    return Path(out)


# ---------------------------------------------------------------------------------------------
# Runs

def child(argv: list[str]) -> None:
    """Run the CLI in this process after importing everything; print memory and time as JSON."""
    import torch  # noqa: F401
    from osgeo import gdal  # noqa: F401

    import bdgf_core.bdgf_model  # noqa: F401
    import bdgf_core.cli as bcli
    import bdgf_core.diffusion  # noqa: F401
    import bdgf_core.inference  # noqa: F401
    import bdgf_core.models  # noqa: F401

    import threading

    base = _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    trace: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:  # the resident set over the run (4 samples a second), to see whether it stays flat
        while not stop.wait(0.25):
            trace.append((time.perf_counter() - t0, _status_mb("VmRSS")))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if argv[0] == "features":
        rc = _stream_features(*argv[1:])
    else:
        rc = bcli.main(argv + ["--progress", "none"])
    out = {"rc": rc, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
           "baseline_mb": base, "peak_mb": _peak()}
    stop.set()
    sampler.join()
    out["growth_mb"] = out["peak_mb"] - out["baseline_mb"]
    if trace:  # the highest resident set in each quarter of the run
        q = [max([m for t, m in trace if k / 4 <= t / out["seconds"] < (k + 1) / 4] or [float("nan")]) for k in range(4)]
        out["rss_quarters_mb"] = q
    print(MARK + json.dumps(out), flush=True)


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak() -> float:
    """Resident MB now; the peak (VmHWM) restarts from here. ru_maxrss cannot serve: Linux keeps
    it across fork and exec, so a child of a big process (pytest with torch) starts at its peak."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    return _status_mb("VmRSS")


def _peak() -> float:
    return _status_mb("VmHWM")


def _stream_features(model_path: str, spectral: str, sar: str, memory_mb: str) -> int:
    """The classification's streaming of diffusion features (read rows with the halo, compute,
    discard) over a scene, without a classifier: rows per block from the same budget rule."""
    from bdgf_core.diffusion import DiffusionModel
    from bdgf_core.inference import DiffusionFeatures, Inputs, _read, rows_per_block
    from bdgf_core.raster import RasterSource, gdal_cache_cap

    spec = RasterSource(spectral)
    a = RasterSource(sar, spec.grid)
    dif = DiffusionFeatures(DiffusionModel.load(model_path), spec.height, spec.width)
    inputs = Inputs(spec, a, diffusion=dif)
    budget = float(memory_mb) * 2**20
    cache = max(8 * 2**20, int(budget / 16))
    rows = rows_per_block(inputs, float(memory_mb), 0, 0, cache + dif.working_bytes())
    print(f"rows per block {rows}, DiffusionFeatures.working_bytes {dif.working_bytes() / 2**20:.1f} MB", file=sys.stderr)
    with gdal_cache_cap(cache):
        for r0 in range(0, spec.height, rows):
            blk = _read(inputs, r0, min(r0 + rows, spec.height), 0)
            dif.rows(*blk.rows, *blk.raw)
    return 0


def measured(*argv: object) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", *map(str, argv)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = [x for x in p.stdout.splitlines() if x.startswith(MARK)]
    if p.returncode != 0 or not line:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    out = json.loads(line[-1][len(MARK):])
    if out["rc"] != 0:
        raise SystemExit(f"failed ({out['rc']}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return out


def stats(xs: list[float]) -> dict:
    return {"min": float(np.min(xs)), "median": float(np.median(xs)), "max": float(np.max(xs)), "n": len(xs)}


def fmt(s: dict, digits: int = 0) -> str:
    return f"{s['min']:.{digits}f} / {s['median']:.{digits}f} / {s['max']:.{digits}f}"


def matmul_flops(repeats: int, n: int = 2048) -> dict:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(max(3, repeats)):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n ** 3 / (time.perf_counter() - t))
    return stats(rates)


def _old_predict_block(net, s, a, f, patch, batch_size=1024):
    """predict_block before issue 5 (commit d8f5beb), for the before/after comparison."""
    import torch

    def win(x):
        return torch.as_tensor(x).unfold(1, patch, 1).unfold(2, patch, 1).permute(1, 2, 0, 3, 4)

    ws = [win(x) for x in (s, a, f)]
    h, w = ws[0].shape[:2]
    ws = [x.reshape(h * w, *x.shape[2:]) for x in ws]
    probs = torch.empty(h * w, net.n_classes)
    with torch.inference_mode():
        for st in range(0, h * w, batch_size):
            e = min(st + batch_size, h * w)
            probs[st:e] = torch.softmax(net(*(x[st:e] for x in ws)).logits, -1)
    return probs.T.reshape(net.n_classes, h, w).numpy()


# ---------------------------------------------------------------------------------------------
# Parts

def setup(work: Path, parts: list[str]) -> dict:
    """Scenes, models and mosaics that ``parts`` need, made once in ``work`` (kept between runs)."""
    work.mkdir(parents=True, exist_ok=True)
    f = {"scene": work / "scene", "ddpm": work / "ddpm.bdgf", "feat": work / "features.tif",
         "bdgf": work / "bdgf.bdgf", "rf": work / "rf.bdgf", "rf20": work / "rf20.bdgf", "rf5": work / "rf5.bdgf"}
    s = f["scene"]
    if not (s / "groundtruth.gpkg").exists():
        cli("generate-scene", "--out-dir", s)
    spec, sar, gt = s / "spectral.tif", s / "sar.tif", s / "groundtruth.gpkg"
    f.update(spectral=spec, sar=sar)
    common = ["--spectral", spec, "--sar", sar, "--groundtruth", gt, "--samples-per-class", 20]
    paper = {"throughput", "throughput-gpu", "memory", "diffusion", "dense"} & set(parts)
    if paper and not f["ddpm"].exists():
        cli("pretrain", "--spectral", spec, "--sar", sar, "--profile", "fast", "--steps", 2, "--model", f["ddpm"],
            "--features", f["feat"])
    if paper and not f["bdgf"].exists():
        cli("train", *common, "--features", f["feat"], "--epochs", 2, "--patch-size", 9, "--model", f["bdgf"])
    if "throughput" in parts and not f["rf"].exists():
        cli("train-baseline", *common, "--model", f["rf"])
    for trees, part in ((20, "scaling-rf"), (5, "memory")):
        if part in parts and not f[f"rf{trees}"].exists():
            cli("train-baseline", *common, "--trees", trees, "--model", f[f"rf{trees}"])
    # mosaics of the 200 x 200 scene (and of its features)
    sides = (list(SCALE_SIZES) if "scaling-rf" in parts else []) + ([10000] if "memory" in parts else [])
    for n in sides:
        for what in ("spectral", "sar", "feat"):
            out = work / f"{what}_{n}.vrt"
            if what == "feat" and n != 10000:
                continue
            if not out.exists():
                mosaic_vrt(f["feat"] if what == "feat" else f[what], n // 200, n // 200, out)
            f[f"{what}_{n}"] = out
    # scaling runs (sections 3 and 4): an 8-band scene, a one-timestep diffusion model with 96-pixel
    # tiles and its features, a tiny BDGF; mosaics of 1000, 2000 and 4000 pixels a side
    if {"scaling-bdgf", "diffusion-scaling"} & set(parts):
        s8 = work / "scene8"
        if not (s8 / "groundtruth.gpkg").exists():
            cli("generate-scene", "--out-dir", s8, "--bands", SCALE_BANDS)
        f.update(spectral8=s8 / "spectral.tif", sar8=s8 / "sar.tif", ddpm8=work / "ddpm8.bdgf",
                 feat8=work / "features8.tif", bdgf_tiny=work / "bdgf_tiny.bdgf")
        if not f["ddpm8"].exists():
            cli("pretrain", "--spectral", f["spectral8"], "--sar", f["sar8"], *SCALE_DDPM, "--model", f["ddpm8"],
                "--features", f["feat8"])
        if not f["bdgf_tiny"].exists():
            tiny_bdgf(f["bdgf_tiny"], f["spectral8"], f["sar8"], f["feat8"])
        for n in SCALE_SIZES:
            for what, src in (("spectral", f["spectral8"]), ("sar", f["sar8"]), ("feat", f["feat8"])):
                out = work / f"s8_{what}_{n}.vrt"
                if not out.exists():
                    mosaic_vrt(src, n // 200, n // 200, out)
                f[f"s8_{what}_{n}"] = out
    return f


#: Scaling runs (sections 3 and 4): scene sides, memory budget, the scene's bands, the diffusion model.
SCALE_SIZES = (1000, 2000, 4000)
SCALE_BUDGET_MB = 256
#: The diffusion model's tiles alone take about 260 MB (DiffusionFeatures.working_bytes): a budget of 256 MB
#: would leave blocks of one row (each a 1-row tile with the 13-row halo on both sides).
SCALE_DIFFUSION_BUDGET_MB = 512
SCALE_BANDS = 8
SCALE_DDPM = ("--profile", "fast", "--steps", 2, "--timesteps", 10, "--tile-size", 96)
TINY = dict(patch=3, embed=8)


def tiny_bdgf(path: Path, spectral: Path, sar: Path, features: Path, classes: int = 7) -> Path:
    """A deliberately small BDGF model file for the scaling runs: CNN branch only, patch 3, embedding 8,
    random weights (time and memory do not depend on the weights), the scene's band statistics.
    It goes through the same ``classify`` code as any BDGF model (BDGFPredictor, plan, streaming)."""
    import torch

    from bdgf_core.groundtruth import ClassInfo
    from bdgf_core.modelfile import save_model
    from bdgf_core.network.bdgf import BDGFConfig, BDGFNet
    from bdgf_core.raster import RasterSource

    spec, s_ar = RasterSource(spectral).read(), RasterSource(sar).read()
    nf = RasterSource(features).bands
    torch.manual_seed(0)
    net = BDGFNet(spec.shape[0], s_ar.shape[0], nf, classes,
                  BDGFConfig(use_transformer=False, use_mamba=False, **TINY)).eval()
    meta = {"model_id": "bench-tiny", "network": net.meta(),
            "classes": [ClassInfo(i + 1, f"class {i + 1}", "#3366aa").to_json() for i in range(classes)],
            "inputs": {"spectral_bands": spec.shape[0], "sar_bands": s_ar.shape[0], "feature_bands": nf}}
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    for name, x in (("spectral", spec), ("sar", s_ar)):
        tensors[f"{name}_mean"] = np.nanmean(x, (1, 2)).astype(np.float32)
        tensors[f"{name}_std"] = np.maximum(np.nanstd(x, (1, 2)), 1e-6).astype(np.float32)
    save_model(path, "bdgf", tensors, meta)
    return Path(path)


def throughput(f: dict, repeats: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bdgf_core.models import load_predictor
    from bdgf_core.normalise import apply
    from bdgf_core.patches import pad_reflect
    from bdgf_core.raster import RasterSource
    from bdgf_core.training import predict_block

    out: dict = {"threads": torch.get_num_threads()}
    out["matmul"] = matmul_flops(repeats)
    pred, meta = load_predictor(f["bdgf"])
    pred.plan(1024 * 2**20)
    net, p = pred.net, pred.patch
    n = 48  # a 48 x 48 block of pixels (2304), with its halo, from the scene
    raw = [RasterSource(x).read(0, n + p - 1, 0, n + p - 1) for x in (f["spectral"], f["sar"], f["feat"])]
    raw = [pad_reflect(x, p)[:, p // 2:p // 2 + n + p - 1, p // 2:p // 2 + n + p - 1] for x in raw]
    s = np.nan_to_num(apply(raw[0], pred.stats["spectral_mean"], pred.stats["spectral_std"]))
    a = np.nan_to_num(apply(raw[1], pred.stats["sar_mean"], pred.stats["sar_std"]))
    fe = raw[2]
    # FLOPs of the network per pixel (per-patch forward, as the architecture defines it)
    from bdgf_core.patchconv import patches

    batch = [patches(torch.from_numpy(x[:, :16 + p - 1, :16 + p - 1].copy()), p) for x in (s, a, fe)]
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(*batch)
    out["bdgf_flops_per_pixel"] = fc.get_total_flops() / batch[0].shape[0]
    variants = {
        f"issue-4 predict_block (batch 1024)": lambda: _old_predict_block(net, s, a, fe, p, 1024),
        f"tiles of {pred.batch_size}, no shared layers": lambda: predict_block(net, s, a, fe, p, pred.batch_size, share=False),
        f"tiles of {pred.batch_size}, shared first layers (default)": lambda: predict_block(net, s, a, fe, p, pred.batch_size),
    }
    ref = variants[list(variants)[-1]]()
    for k, fn in variants.items():
        assert np.allclose(fn(), ref, atol=1e-5), k
    res: dict[str, dict[str, list]] = {k: {"wall": [], "cpu": []} for k in variants}
    for _ in range(repeats):  # interleaved, so that the machine's load hits every variant alike
        for k, fn in variants.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            res[k]["wall"].append(n * n / (time.perf_counter() - t))
            res[k]["cpu"].append(n * n / (time.process_time() - c))
    out["bdgf_variants"] = {k: {"px_per_s": stats(v["wall"]), "px_per_cpu_s": stats(v["cpu"])} for k, v in res.items()}
    best = out["bdgf_variants"][list(variants)[-1]]
    out["bdgf_px_per_s"] = best["px_per_s"]
    out["bdgf_batch"] = pred.batch_size
    # single-thread rates: the same network on one core (CPU time is then close to wall time)
    torch.set_num_threads(1)
    one = []
    for _ in range(repeats):
        t = time.perf_counter()
        predict_block(net, s, a, fe, p, pred.batch_size)
        one.append(n * n / (time.perf_counter() - t))
    out["bdgf_px_per_s_1thread"] = stats(one)
    out["matmul_1thread"] = matmul_flops(repeats)
    torch.set_num_threads(out["threads"])
    # random forest: the whole 200 x 200 scene per repeat
    rf, _ = load_predictor(f["rf"])
    spec, sar = RasterSource(f["spectral"]).read(), RasterSource(f["sar"]).read()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        rf.predict_block(spec, sar)
        rates.append(spec.shape[1] * spec.shape[2] / (time.perf_counter() - t))
    out["rf_px_per_s"] = stats(rates)
    out["rf_trees"] = int(len(rf.forest["roots"]))
    # end to end through the command line, 200 x 200 (one run each)
    out["cli_bdgf_200"] = measured("classify", "--model", f["bdgf"], "--spectral", f["spectral"], "--sar", f["sar"],
                                   "--features", f["feat"], "--out", f["work"] / "m_bdgf_200.tif",
                                   "--confidence", f["work"] / "c_bdgf_200.tif", "--entropy", f["work"] / "e_bdgf_200.tif")
    out["cli_rf_200"] = measured("classify", "--model", f["rf"], "--spectral", f["spectral"], "--sar", f["sar"],
                                 "--out", f["work"] / "m_rf_200.tif", "--confidence", f["work"] / "c_rf_200.tif")
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def bf16_matmul_flops(repeats: int, n: int = 8192, device: str = "cuda") -> dict:
    """bf16 matrix-multiply rate on the GPU (FLOP/s), the reference of the GPU ratio."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    _sync(device)
    rates = []
    for _ in range(max(3, repeats)):
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        rates.append(10 * 2 * n ** 3 / (time.perf_counter() - t))
    return stats(rates)


def throughput_gpu(f: dict, repeats: int, device: str = "cuda", matmul_n: int = 8192,
                   batches: tuple[int, ...] = (1024, 4096)) -> dict:
    """Section 1 on a CUDA GPU: BDGF's pixels per second under bf16 autocast (as Classify runs on a
    GPU), and (FLOPs/pixel x pixels/s) / the bf16 matmul rate of the same GPU (issue 5: >= 0.2).
    ``device`` "cpu" (with small sizes) only checks the code on a machine without a GPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from bdgf_core.models import load_predictor
    from bdgf_core.network.selective_scan import fused_scan_fn
    from bdgf_core.normalise import apply
    from bdgf_core.patchconv import patches
    from bdgf_core.patches import pad_reflect
    from bdgf_core.raster import RasterSource
    from bdgf_core.training import predict_block

    out: dict = {"gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
                 "mamba_ssm_kernels": fused_scan_fn() is not None}
    out["matmul_bf16"] = bf16_matmul_flops(repeats, matmul_n, device)
    out["matmul_n"] = matmul_n
    pred, _ = load_predictor(f["bdgf"], device=device)
    net, p = pred.net, pred.patch
    raw = [pad_reflect(RasterSource(x).read(), p) for x in (f["spectral"], f["sar"], f["feat"])]
    s = np.nan_to_num(apply(raw[0], pred.stats["spectral_mean"], pred.stats["spectral_std"]))
    a = np.nan_to_num(apply(raw[1], pred.stats["sar_mean"], pred.stats["sar_std"]))
    fe = np.nan_to_num(raw[2])
    n = s.shape[1] - p + 1
    batch = [patches(torch.from_numpy(x[:, :16 + p - 1, :16 + p - 1].copy()).to(device), p) for x in (s, a, fe)]
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(*batch)
    out["bdgf_flops_per_pixel"] = fc.get_total_flops() / batch[0].shape[0]
    rates: dict[int, list] = {}
    for size in batches:
        predict_block(net, s, a, fe, p, size)  # warm-up (cuDNN algorithm choice)
        rates[size] = []
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            predict_block(net, s, a, fe, p, size)  # returns host numpy: synchronised
            rates[size].append(n * n / (time.perf_counter() - t))
    out["bdgf_px_per_s"] = {str(k): stats(v) for k, v in rates.items()}
    out["pixels"] = n * n
    return out


def memory(f: dict, strip_rows: int) -> dict:
    w = f["work"]
    out = {}
    out["rf5_10000"] = measured("classify", "--model", f["rf5"], "--spectral", f["spectral_10000"], "--sar",
                                 f["sar_10000"], "--out", w / "m_rf_10000.tif", "--confidence", w / "c_rf_10000.tif",
                                 "--memory-mb", 1024)
    strip = {k: window_vrt(f[f"{k}_10000"], 0, 0, 10000, strip_rows, w / f"{k}_strip.vrt") for k in ("spectral", "sar", "feat")}
    out["bdgf_strip"] = measured("classify", "--model", f["bdgf"], "--spectral", strip["spectral"], "--sar", strip["sar"],
                                 "--features", strip["feat"], "--out", w / "m_bdgf_strip.tif", "--confidence",
                                 w / "c_bdgf_strip.tif", "--memory-mb", 1024)
    out["strip_rows"] = strip_rows
    return out


def scaling_rf(f: dict, repeats: int) -> dict:
    """The forest (20 trees) on the 60 + 2-band mosaics, ``repeats`` rounds over the sizes (interleaved)."""
    w = f["work"]
    out: dict = {"runs": {str(n): [] for n in SCALE_SIZES}, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "memory_mb": 1024}
    for _ in range(repeats):
        for n in SCALE_SIZES:
            out["runs"][str(n)].append(measured(
                "classify", "--model", f["rf20"], "--spectral", f[f"spectral_{n}"], "--sar", f[f"sar_{n}"],
                "--out", w / f"m_rf_{n}.tif", "--memory-mb", out["memory_mb"]))
    return out


def scaling_bdgf(f: dict, repeats: int) -> dict:
    """The tiny BDGF on the 8 + 2-band mosaics with their diffusion-feature raster, SCALE_BUDGET_MB."""
    w = f["work"]
    out: dict = {"runs": {str(n): [] for n in SCALE_SIZES}, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "memory_mb": SCALE_BUDGET_MB}
    for _ in range(repeats):
        for n in SCALE_SIZES:
            out["runs"][str(n)].append(measured(
                "classify", "--model", f["bdgf_tiny"], "--spectral", f[f"s8_spectral_{n}"], "--sar",
                f[f"s8_sar_{n}"], "--features", f[f"s8_feat_{n}"], "--out", w / f"m_tiny_{n}.tif",
                "--memory-mb", SCALE_BUDGET_MB))
    return out


def diffusion_scaling(f: dict, repeats: int) -> dict:
    """The classification's streaming of diffusion features (``features`` child) over the 8 + 2-band mosaics."""
    from bdgf_core.diffusion import DiffusionModel
    from bdgf_core.diffusion.cost import model_cost

    out: dict = {"runs": {str(n): [] for n in SCALE_SIZES}, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "memory_mb": SCALE_DIFFUSION_BUDGET_MB, "cost": model_cost(DiffusionModel.load(f["ddpm8"]))}
    for _ in range(repeats):
        for n in SCALE_SIZES:
            out["runs"][str(n)].append(measured("features", f["ddpm8"], f[f"s8_spectral_{n}"], f[f"s8_sar_{n}"],
                                                SCALE_DIFFUSION_BUDGET_MB))
    return out


def diffusion(f: dict, repeats: int, matmul: dict) -> dict:
    from bdgf_core.diffusion import DiffusionModel
    from bdgf_core.diffusion.cost import model_cost
    from bdgf_core.inference import DiffusionFeatures
    from bdgf_core.raster import RasterSource

    model = DiffusionModel.load(f["ddpm"])
    cost = model_cost(model)
    spec, sar = RasterSource(f["spectral"]).read(), RasterSource(f["sar"]).read()
    h, wd = spec.shape[1:]
    rates = []
    for _ in range(repeats):
        dif = DiffusionFeatures(model, h, wd)
        t = time.perf_counter()
        dif.rows(0, h, spec, sar, 0)
        rates.append(h * wd / (time.perf_counter() - t))
    import torch

    out = {"cost": cost, "px_per_s": stats(rates), "threads": torch.get_num_threads()}
    out["ratio"] = cost["feature_flops_per_output_pixel"] * out["px_per_s"]["median"] / matmul["median"]
    w = f["work"]
    # one call from rasters to map: BDGF with the features computed in the run, 64 x 64 window
    win = {k: window_vrt(f[k], 0, 0, 64, 64, w / f"{k}_64.vrt") for k in ("spectral", "sar", "feat")}
    out["classify_64_with_model"] = measured("classify", "--model", f["bdgf"], "--spectral", win["spectral"], "--sar",
                                             win["sar"], "--diffusion-model", f["ddpm"], "--out", w / "m_dm_64.tif")
    out["classify_64_with_raster"] = measured("classify", "--model", f["bdgf"], "--spectral", win["spectral"], "--sar",
                                              win["sar"], "--features", win["feat"], "--out", w / "m_fr_64.tif")
    from osgeo import gdal

    m1, m2 = (gdal.Open(str(w / x)).ReadAsArray() for x in ("m_dm_64.tif", "m_fr_64.tif"))
    out["classify_64_same_map"] = float((m1 == m2).mean())
    return out


# ---------------------------------------------------------------------------------------------
# Report

def _fit(runs: dict) -> tuple[float, float]:
    """Least-squares CPU time = a + b * Mpixels over every run of every size: (a in s, b in s per Mpixel)."""
    x = [int(n) ** 2 / 1e6 for n in runs for _ in runs[n]]
    y = [r["cpu_seconds"] for n in runs for r in runs[n]]
    if len(set(x)) < 2:
        return float("nan"), float("nan")
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def scale_section(part: dict, what: str) -> list[str]:
    """Table and summary of a scaling part: per size min / median / max over the repeats."""
    runs = {n: v for n, v in sorted(part["runs"].items(), key=lambda kv: int(kv[0])) if v}
    if not runs:
        return [f"({what}: no runs yet)", ""]
    a, b = _fit(runs)
    reps = sorted({len(v) for v in runs.values()})
    L = ["| scene | Mpixels | runs | wall s | CPU s | CPU s per Mpixel | CPU s per Mpixel, start cost a removed "
         "| peak resident MB | growth MB | resident MB by quarter of the run (largest) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    per, per_fit, peaks = [], [], []
    for n, rs in runs.items():
        mp = int(n) ** 2 / 1e6
        cpu = [r["cpu_seconds"] for r in rs]
        st = lambda xs, d=1: fmt(stats(xs), d) if len(xs) > 1 else f"{xs[0]:.{d}f}"  # noqa: E731
        per.append(float(np.median(cpu)) / mp)
        per_fit.append((float(np.median(cpu)) - a) / mp)
        peaks += [r["peak_mb"] for r in rs]
        big = max(rs, key=lambda r: r["peak_mb"])
        q = " / ".join(f"{x:.0f}" for x in big.get("rss_quarters_mb", []))
        L.append(f"| {n} x {n} | {mp:.0f} | {len(rs)} | {st([r['seconds'] for r in rs])} | {st(cpu)} | "
                 f"{st([c / mp for c in cpu])} | {st([(c - a) / mp for c in cpu]) if min(reps) > 1 else '-'} | "
                 f"{st([r['peak_mb'] for r in rs], 0)} | "
                 f"{st([r['growth_mb'] for r in rs], 0)} | {q} |")
    spread = max(per) / min(per) - 1
    spread_fit = max(per_fit) / min(per_fit) - 1
    ok = "within" if spread <= 0.2 else "outside"
    if min(reps) > 1:
        fit = (f"fit over all runs, CPU time = a + b x Mpixels: **a = {a:.1f} s** (the run's start: model, memory "
               f"probe, first pass), **b = {b:.2f} CPU s per Mpixel**; with a removed the spread is "
               f"{100 * spread_fit:.0f}%")
    else:
        fit = (f"the fit CPU time = a + b x Mpixels gives a = {a:.1f} s, b = {b:.2f} CPU s per Mpixel, but with one run "
               "per size a is not separable from the run-to-run noise (the forest's repeats: about 20% at 1 Mpixel), "
               "so the spread above is the figure")
    L += ["", f"{what}: CPU s per Mpixel (median of the runs) varies by **{100 * spread:.0f}%** over the sizes "
          f"({ok} the 20% target); {fit}. Peak resident memory over all sizes and runs: **{min(peaks):.0f}-{max(peaks):.0f} MB** "
          f"(range {max(peaks) - min(peaks):.0f} MB; budget `--memory-mb {part.get('memory_mb')}`); {', '.join(map(str, reps))} "
          "run(s) per size.", ""]
    return L


def report_gpu(g: dict, path: Path) -> None:
    """docs/bench/classify_gpu.md: the throughput-gpu part, on its own (another machine than the CPU parts)."""
    mm = g["matmul_bf16"]["median"]
    fl = g["bdgf_flops_per_pixel"]
    L = ["# Classification throughput on a CUDA GPU (issue 5)", "",
         "Written by `benchmarks/bench_classify.py --parts throughput-gpu` from classify_gpu.json; do not edit by hand.",
         "", f"Command: `{g['command']}`, {g['date']}. GPU: {g['gpu']}; torch {g['torch']}; mamba-ssm kernels "
         f"{'used' if g['mamba_ssm_kernels'] else 'not installed (pure-PyTorch scan)'}.", "",
         f"The model of section 1 of classify.md (paper network, {fl / 1e6:.1f} MFLOP per pixel, per-patch count) "
         f"under bf16 autocast, as Classify runs on a GPU; the whole 200 x 200 scene ({g['pixels']} pixels) per "
         f"repeat, min / median / max. bf16 matmul ({g['matmul_n']}^2) in the same run: "
         f"{fmt({k: v / 1e12 for k, v in g['matmul_bf16'].items() if k != 'n'}, 1)} TFLOP/s.", "",
         "| batch (pixels) | pixels/s | ratio (FLOPs/pixel x pixels/s) / bf16 matmul (target >= 0.2) |",
         "|---|---|---|"]
    for k, v in g["bdgf_px_per_s"].items():
        L.append(f"| {k} | {fmt(v)} | {fl * v['median'] / mm:.3f} |")
    path.write_text("\n".join(L) + "\n")


def report(res: dict, args, path: Path) -> None:
    import torch

    cpu = cpu_model()
    legacy = res.get("commands", {})  # parts written before each part recorded its own command
    cmds = [res[p.replace("-", "_")].get("command") or legacy.get(p) for p in PARTS if p.replace("-", "_") in res]
    L = ["# Classification at scale (issue 5)", "",
         "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(c for c in cmds if c))
         + ". The parts can run separately (`--parts`); the raw figures are in classify.json. "
         "`make bench` (benchmarks/run_all.py) runs them all.", "",
         f"Machine: {cpu}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}, Python {platform.python_version()}. "
         "**The machine was shared**: other jobs (among them a diffusion-training sweep) ran on the same 2 cores during "
         "the whole benchmark (load average 3-8, often 6 busy processes), so wall-clock rates are lower and noisier "
         "than on an idle machine. "
         "Figures compared with each other come from interleaved repeats of one run; ratios are taken within the run.",
         "", "Figures are min / median / max over the repeats where there are repeats (a child process per run: time "
         "of the CLI's `main`, peak resident set = the kernel's VmHWM of that process, growth = peak minus the "
         "resident set after importing torch, GDAL and bdgf_core).", ""]
    t = res.get("throughput")
    if t:
        mm = t["matmul"]
        fl = t["bdgf_flops_per_pixel"]
        px = t["bdgf_px_per_s"]
        ratio = fl * px["median"] / mm["median"]
        ratio1 = fl * t["bdgf_px_per_s_1thread"]["median"] / t["matmul_1thread"]["median"]
        L += ["## 1. Throughput and FLOP efficiency", "",
              f"BDGF, paper network (patch 9, CNN + transformer + Mamba branches, 60 spectral + 2 SAR bands, 32 diffusion "
              f"feature channels, 7 classes), 2 epochs on the generated scene; a 48 x 48-pixel block with its halo, "
              f"`BDGFPredictor`'s batch for a 1 GiB budget ({t['bdgf_batch']} pixels), {t['threads']} torch threads.", "",
              f"- Network FLOPs per pixel (FlopCounterMode, one batch, per-patch forward): **{fl / 1e6:.1f} MFLOP**",
              f"- fp32 matmul (2048^2) in the same run: {fmt({k: v / 1e9 for k, v in mm.items() if k != 'n'} | {'n': 0}, 1)} "
              f"GFLOP/s with {t['threads']} threads; {fmt({k: v / 1e9 for k, v in t['matmul_1thread'].items() if k != 'n'} | {'n': 0}, 1)} "
              "GFLOP/s with 1 thread", "",
              "| predict_block variant | pixels/s (wall) | pixels/s of CPU time |", "|---|---|---|"]
        for k, v in t["bdgf_variants"].items():
            L.append(f"| {k} | {fmt(v['px_per_s'])} | {fmt(v['px_per_cpu_s'])} |")
        L += ["", f"- BDGF: **{px['median']:.0f} pixels/s** (median, {t['threads']} threads); "
              f"{t['bdgf_px_per_s_1thread']['median']:.0f} pixels/s on 1 thread.",
              f"- Ratio (FLOPs/pixel x pixels/s) / (matmul FLOP/s): **{ratio:.2f}** with {t['threads']} threads, "
              f"**{ratio1:.2f}** on 1 thread (target >= 0.25). With the shared first layers the network computes fewer "
              "FLOPs than the per-patch count used here, so this is the effective rate of the per-patch network.",
              f"- Random forest ({t['rf_trees']} trees): {fmt(t['rf_px_per_s'])} pixels/s (whole 200 x 200 scene, numpy, "
              "one thread).",
              f"- Through the CLI, 200 x 200 scene, map + confidence + entropy: BDGF {t['cli_bdgf_200']['seconds']:.1f} s "
              f"({40000 / t['cli_bdgf_200']['seconds']:.0f} pixels/s, model load and memory probe included), peak "
              f"{t['cli_bdgf_200']['peak_mb']:.0f} MB; random forest {t['cli_rf_200']['seconds']:.1f} s, peak "
              f"{t['cli_rf_200']['peak_mb']:.0f} MB.", ""]
    m = res.get("memory")
    if m:
        r, b = m["rf5_10000"], m["bdgf_strip"]
        L += ["## 2. Peak memory on a 10000 x 10000 scene, 60 + 2 bands (target < 2 GiB)", "",
              "The scene is a VRT mosaic of the 200 x 200 scene, 50 x 50 times (24.8 GB of float32 input if it were "
              "read whole). `--memory-mb 1024` (the default).", "",
              "| run | pixels | time (s) | pixels/s | peak resident (MB) | growth over imports (MB) |", "|---|---|---|---|---|---|",
              f"| random forest, 5 trees, whole 10000 x 10000, map + confidence | 1e8 | {r['seconds']:.0f} | "
              f"{1e8 / r['seconds']:.0f} | **{r['peak_mb']:.0f}** | {r['growth_mb']:.0f} |",
              f"| BDGF (paper network), strip of rows 0-{m['strip_rows']} x 10000 columns (VRT window), map + confidence "
              f"| {m['strip_rows'] * 10000} | {b['seconds']:.0f} | {m['strip_rows'] * 10000 / b['seconds']:.0f} | "
              f"**{b['peak_mb']:.0f}** | {b['growth_mb']:.0f} |", "",
              f"Peak resident memory on the 10000 x 10000 x 62-band scene: **{r['peak_mb']:.0f} MB** (random forest, whole "
              f"scene), **{b['peak_mb']:.0f} MB** (BDGF, paper network, strip); target < 2048 MB.", "",
              "The forest has 5 trees instead of the default 200 so that the 1e8 pixels fit the time of the benchmark "
              "(its memory per block does not depend on the trees). BDGF over 1e8 pixels would take about "
              f"{1e8 / max(res.get('throughput', {}).get('bdgf_px_per_s', {}).get('median', 1), 1) / 3600:.0f} hours here, "
              "so it ran on a strip 10000 pixels wide: the width fixes the memory of a block of rows, the number "
              "of blocks does not change it (section 3).", ""]
    sr, sb = res.get("scaling_rf"), res.get("scaling_bdgf")
    if sr or sb:
        L += ["## 3. Time and memory against scene size", "",
              "Each run is a child process classifying a VRT mosaic of a 200 x 200 generated scene "
              f"({', '.join(f'{n} x {n}' for n in SCALE_SIZES)}), one torch thread (`OMP_NUM_THREADS=1`). "
              "**Linearity is judged on CPU time** (user + system time of the run's process): the wall time "
              "includes the share of the 2 cores taken by the other jobs on this machine, which changed from run "
              "to run (wall/CPU ratios of 1.2-3 were seen), so it says little about the code. The resident set "
              "was sampled 4 times a second during each run; the last column gives its highest value in each "
              "quarter of the run (the largest run of the size), which shows whether memory creeps up over "
              "the blocks.", ""]
        if sr:
            L += [f"Random forest, 20 trees, 60 + 2 bands, `--memory-mb {sr['memory_mb']}` "
                  f"(`{sr['command']}`, {sr['date']}, load average {sr['loadavg'][0]:.1f} at the end):", ""]
            L += scale_section(sr, "Forest")
        if sb:
            L += [f"BDGF, a deliberately small model: CNN branch only, patch {TINY['patch']}, embedding "
                  f"{TINY['embed']}, random weights (time and memory do not depend on them), on a {SCALE_BANDS} + 2-band "
                  "generated scene with its 32 diffusion-feature channels from a raster (`--features`), "
                  f"`--memory-mb {sb['memory_mb']}` (`{sb['command']}`, {sb['date']}, load average "
                  f"{sb['loadavg'][0]:.1f} at the end). The paper network (section 1) takes about 200 s per Mpixel "
                  "here and the CNN branch on 60 bands about 70, which would make the 4000 x 4000 run hours; the "
                  "streaming code (`inference.classify`), the predictor (`BDGFPredictor`, its `plan` of the batch "
                  "from the budget) and the network code are the same as for any BDGF model. The budget is small "
                  "enough that every size, 1000 x 1000 included, is split into several blocks of rows, so each run "
                  "fills it.", ""]
            L += scale_section(sb, "BDGF")
        L += [SCALE_NOTES, ""]
    d = res.get("diffusion")
    if d:
        c = d["cost"]
        L += ["## 4. Diffusion features computed during classification", "",
              f"`pretrain --profile fast --steps 2` model: {c['parameters']} parameters, {c['denoiser_bands']} denoiser "
              f"bands, {c['feature_flops_per_pixel'] / 1e6:.2f} MFLOP per pixel of a window, "
              f"{c['feature_flops_per_output_pixel'] / 1e6:.2f} MFLOP per output pixel with the halo of "
              f"{c['halo']} px around {c['extraction_tile']}-pixel tiles (diffusion/cost.py).", "",
              f"- Throughput (`DiffusionFeatures.rows` over the 200 x 200 scene, {d.get('threads', '?')} torch "
              f"thread(s)): {fmt(d['px_per_s'])} pixels/s; ratio (FLOPs per output pixel, halo included, x pixels/s) / "
              f"(matmul FLOP/s with as many threads, {d.get('matmul_source', 'same run')}): **{d['ratio']:.2f}**.", "",
              f"One call from rasters to map (BDGF, 64 x 64 window): with `--diffusion-model` "
              f"{d['classify_64_with_model']['seconds']:.1f} s, peak {d['classify_64_with_model']['peak_mb']:.0f} MB; with "
              f"the feature raster `--features` {d['classify_64_with_raster']['seconds']:.1f} s, peak "
              f"{d['classify_64_with_raster']['peak_mb']:.0f} MB; the two maps agree on "
              f"{100 * d['classify_64_same_map']:.2f}% of the pixels (the raster's features were computed on the "
              "whole 200 x 200 scene, the run's on the 64 x 64 window, whose edges are then image borders with "
              "reflect padding; on the same scene the maps are identical: tests/test_classify_scale.py).", ""]
    ds = res.get("diffusion_scaling")
    if ds:
        c = ds["cost"]
        if not d:
            L += ["## 4. Diffusion features computed during classification", ""]
        L += ["### Diffusion features against scene size", "",
              "The streaming path of `classify --diffusion-model` without a classifier (`child features` in "
              "this script: rows read with the diffusion halo by `inference._read`, features computed block by "
              "block by `inference.DiffusionFeatures.rows`, rows per block from `inference.rows_per_block` and the "
              "same budget rule, GDAL's cache capped as in a run), over mosaics of the "
              f"{SCALE_BANDS} + 2-band scene, `--memory-mb {ds['memory_mb']}`, one torch thread "
              f"(`{ds['command']}`, {ds['date']}, load average {ds['loadavg'][0]:.1f} at the end). The diffusion "
              f"model is `pretrain {' '.join(map(str, SCALE_DDPM))}`: one timestep (10) and 96-pixel tiles, "
              f"{c['feature_flops_per_pixel'] / 1e6:.2f} MFLOP per pixel of a window, "
              f"{c['feature_flops_per_output_pixel'] / 1e6:.2f} MFLOP per output pixel with the halo of {c['halo']} px "
              f"(the model above: 6.06), so that 4000 x 4000 takes minutes.", ""]
        L += scale_section(ds, "Diffusion features")
        L += [DIFFUSION_NOTES, ""]
    L += [NOTES, ""]
    path.write_text("\n".join(L))


SCALE_NOTES = """Reading the tables (written after the runs of 2026-11-26; the figures above are regenerated, this
text is not):
- Time. A run's CPU time has a fixed start, `a` (model file, `BDGFPredictor.plan`'s memory probe,
  opening the mosaics, the first forward pass, and `raster.any_pixel_with_data`, which then read up to 64 MB
  of rows before the run starts), and a cost per pixel, `b`. The fit over all runs separates them. The
  forest's repeats also show that the CPU time of the same 1000 x 1000 run varies by about 20% from one
  repeat to the next on this shared machine (caches and memory bandwidth shared with the other jobs):
  the 35% spread of the earlier one-run-per-size table was that start cost plus this noise on 4-second
  runs. The cost per pixel does not grow with the scene.
- Memory. Once a block of rows fills the budget the peak stays put: with `--memory-mb 256` the small BDGF
  splits even the 1000 x 1000 scene into blocks (137 rows, 8 blocks; 2000: 67 rows, 30 blocks; 4000: 32
  rows, 125 blocks, as `inference.rows_per_block` computes them now; the runs used the code of 05:18-05:37,
  whose memory probe of the batch was not yet steady, so their rows may differ a little), and its peak changes by a few percent from 1 to
  16 Mpixels. The resident set by quarter of the run is flat, so
  nothing accumulates over the blocks. The peak of the earlier BDGF table (478 -> 883 MB over
  250-1000 pixels a side, `--memory-mb 1024`) grew because those scenes did not fill one block of the
  1 GiB budget: more rows per block, not a leak.
- What is left of the growth with the width (up to a few tens of MB from 1000 to 4000 pixels a side) is
  outside the budget's model, in GDAL: each open handle of a pixel-interleaved GeoTIFF keeps a buffer of
  one decoded tile of all its bands (256 x 256 x bands x 4 bytes: 8 MB for the 32-band feature raster),
  and the two-level VRT mosaics open the same file through several row VRTs, so blocks that straddle two
  rows of the mosaic hold two such buffers (reading a 1500 x 1500 mosaic of a 20-band tile with a 2 MB
  GDAL cache: resident set +10 MB through the two-level VRT, +2 MB through a one-level VRT of the same
  225 tiles). A real mosaic of many distinct pixel-interleaved files would hold one buffer per open file
  (GDAL keeps up to 100 open, GDAL_MAX_DATASET_POOL_SIZE), so band-interleaved inputs
  (`INTERLEAVE=BAND`) are the memory-safe layout for large mosaics.
- Not visible here because the budgets are large, and fixed since: before the run applied `--memory-mb`,
  the command line's input check (`cli._classify_setup` -> `raster.any_pixel_with_data([spec, sar])`)
  read a strip of up to 64 MB of rows, the peak at small budgets (tests/test_classify_scale.py, forest at
  32 MB: +98 MB at 1500 x 1500). It now reads a 2 MB strip with GDAL's cache capped to it as well, and
  that test passes (+32-33 MB at 32 MB, with the runtime reserve raised to the measured 24 MB)."""


DIFFUSION_NOTES = """Reading the table (text written after the runs of 2026-11-26, not regenerated):
- Blocks. `rows_per_block` gives this model about 260 MB of working set (`working_bytes`: 4 tiles of
  (96 + 2 x 13)^2 pixels through the U-Net at once) and the rest of the 512 MB to the rows: 177 rows per
  block at 1000 pixels a side (6 blocks), 88 at 2000 (23), 43 at 4000 (94). A first attempt at
  `--memory-mb 256` left blocks of 1-14 rows (the working set alone is about the budget; the stream
  has no check that the budget fits, `classify` refuses such a budget) and was discarded.
- Memory. The peak stays within the budget (growth 330-489 MB for 512) and does not grow with the scene:
  it falls from 754 to 594 MB as the blocks get shorter, because the working-set bound counts every layer
  of 4 tiles as alive at once (the real peak is lower), and the rows then take less than their share.
  The resident set by quarter of the run does not creep up.
- Time. `DiffusionFeatures.rows` starts its tiles at the top of each block, so every block pays the
  13-row halo above and below its tiles. With blocks shorter than a tile (96 rows) the U-Net computes
  (43 + 26) rows for 43 at 4000 pixels a side against (96 + 26) for 96 on most of a 177-row block at
  1000: about 24% more arithmetic per output pixel at 4000 x 4000 than at 1000 x 1000 with the same
  budget. That is a property of the streaming code at a fixed budget, not noise: the cost per pixel
  grows with the scene's width (not its height) once blocks get shorter than a tile. Measured: 21.7 and
  21.5 CPU s per Mpixel at 1000 and 2000 (blocks of 177 and 88 rows: tiles of 81-96 rows), 25.0 at 4000
  (43-row blocks): +16%, within the 20% target, and from this cause. Proposed fix (for
  the owner of bdgf_core/inference.py): compute features on the global grid of tiles (tile rows at
  multiples of the tile) and keep the rows of the last tile row that the block did not use for the
  next block(s), as the class already keeps the halo rows it has; the cost is then independent of the
  block height, for F x tile x width x 4 bytes more (32 x 96 x 4000 x 4 = 49 MB at 4000 wide), to be
  counted in `rows_per_block`; or, when the budget is tight, fewer tiles per U-Net pass
  (`extract_batch`) so that blocks of at least one tile fit."""


NOTES = """## Where the time goes, and what was done

Profile of `BDGFPredictor.predict_block` (torch.profiler, patch 9, 60 bands, one thread, 1024
pixels): oneDNN convolutions 46% of the time (the CNN branch's second 3-D convolution, the 3 x 3
Q/K/V convolutions of the Mamba branch's group attention and its w11, the CNN branch's w5/w6);
batched matmuls 8% (attention, the scan's read-out); copies 7%; the selective scan's per-band
element-wise steps (`mul`, `exp2`, `addcmul`), BatchNorm, ReLU and the shared layers' sums the
rest. At 123 MFLOP per pixel the network is many small convolutions over 9 x 9 maps plus a scan
that is sequential over the 60 bands; neither reaches the large-matmul rate.

Done, without changing the function the network computes (tests/test_inference.py compares the
streamed maps with the plain per-patch network, and each shared layer with the module itself):
- No more patches of the whole block at once: issue 4's `predict_block` reshaped the strided
  window view of the block, which copies every patch of the block (81 times the block at patch 9,
  e.g. 12 GB for 42 rows of a 10000-wide scene). Batches are now square tiles of pixels whose
  patches are gathered one tile at a time.
- Batch size from the memory budget, at most 256 on CPU: measured on one thread, tiles of 128-256
  pixels ran 1.3-1.6x faster per core than 1024 (the activations stay in cache).
- Channels-last patches: oneDNN's convolutions were about 9% faster on NHWC here.
- Shared first layers (bdgf_core/patchconv.py): every 3 x 3 convolution whose input is a raw
  patch (the CNN branch's spectral 3-D convolution and its SAR and diffusion 2-D convolutions, the
  transformer's tokenizer convolutions, the group attention's Q/K/V of the diffusion features) is
  computed once per tile instead of once per patch. This is exact although the network zero-pads
  each patch: by linearity the patch's output is the tile's convolution minus the kernel taps that
  fall outside the patch (four edge convolutions and four corner taps over the tile's window).
  Deeper layers cannot be shared: their inputs at the patch border already differ between the
  patches that contain a pixel, so a whole-block convolution there would change the function.
  The shareable layers are about 15% of the network's time (one thread); measured gain of the
  whole change set on one thread, interleaved: 1.16x at the same batch of 256.
- All cores: PyTorch's intra-op threads (one per core by default); the next block is read while
  the current one is predicted.

What limits the speed here: the Mamba scan (sequential over the bands, memory-bound), the small
9 x 9 convolutions, and above all this machine's other jobs. With about 6 processes busy on 2
cores, the 2-thread runs were slower than 1 thread (OpenMP threads wait for each other when a
core is taken away), which is why the 1-thread ratio is the better measure of the code. The
random forest predicts with numpy on one thread (bdgf_core/baseline.py, not changed here).

Memory: the budget pays for, in this order, a runtime reserve (24 MB, measured: GDAL's datasets
with their tile decode buffers, the writers' compression buffers, the reader thread; 12 MB until
2026-11-26, when a 32 MB budget peaked at 38 MB), GDAL's block cache (capped at 1/16 of the budget, at least 2 MB),
the diffusion network's tiles (measured on a small window), the BDGF predictor (weights twice,
40 MB measured for PyTorch's first forward pass and the model file, and its batch: every layer's
output counted as if alive at once, about 1.5-2x what a batch really adds), then as many rows per
block as fit. Inputs are read with one dataset-level GDAL call per block (`inference.read_rows`):
pixel-interleaved GeoTIFFs (GDAL's default for multi-band files, used by `generate-scene` and
`pretrain`) otherwise decode each tile once per band; read that way the demo scene's rows came
2.5x faster with half the memory. GDAL still decodes a pixel-interleaved tile of all bands into a
buffer of its own, outside the budget (256 x 256 x bands x 4 bytes per open file: 16 MB at 64
bands); writing multi-band rasters band-interleaved (`INTERLEAVE=BAND` in raster.RasterWriter)
would remove that, and is left to the owner of bdgf_core/raster.py.
"""


# ---------------------------------------------------------------------------------------------
# Issue 16: the exact path, bf16 and the distilled student against the per-patch path
def _branch_times(net) -> tuple[dict, list]:
    """Forward hooks that add each branch's wall time (seconds) into a dict; returns (times, handles)."""
    times: dict = {}
    handles = []
    for name in ("cnn", "trans", "mamba"):
        m = getattr(net, name, None)
        if m is None:
            continue

        def pre(_m, _a, name=name):
            times.setdefault("_start", {})[name] = time.perf_counter()

        def post(_m, _a, _o, name=name):
            times[name] = times.get(name, 0.0) + time.perf_counter() - times["_start"][name]

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return times, handles


#: The dense part's sizes: block side of the rate measurements, side of the map compared with the exact one
#: (its top-left corner of the scene, so with the scene's border), pixels the student is distilled on.
DENSE_BLOCK, DENSE_MAP, DENSE_SAMPLES = 32, 96, 8192


def dense(f: dict, repeats: int) -> dict:
    """Pixels/s of the per-patch path, the exact path (default), --fast bf16 and --fast student on a block of
    the demo scene (interleaved repeats), each branch's share, and the agreement and accuracy of the fast
    maps against the exact one on a DENSE_MAP x DENSE_MAP map."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bdgf_core.groundtruth import load_ground_truth
    from bdgf_core.inference import Inputs
    from bdgf_core.metrics import assess
    from bdgf_core.models import load_predictor
    from bdgf_core.normalise import apply
    from bdgf_core.patchconv import patches
    from bdgf_core.patches import pad_reflect
    from bdgf_core.raster import RasterSource
    from bdgf_core.student import student_for, student_path
    from bdgf_core.training import predict_block

    out: dict = {"threads": torch.get_num_threads(), "matmul": matmul_flops(repeats)}
    pred, meta = load_predictor(f["bdgf"])
    pred.plan(1024 * 2**20)
    net, p = pred.net, pred.patch
    spec_src = RasterSource(f["spectral"])
    inputs = Inputs(spec_src, RasterSource(f["sar"], spec_src.grid), RasterSource(f["feat"], spec_src.grid))
    whole = [pad_reflect(x.read(), p) for x in inputs.sources()]  # the whole scene with its halo
    whole = [x[:, :DENSE_MAP + p - 1, :DENSE_MAP + p - 1] for x in whole]
    n = DENSE_BLOCK
    raw = [x[:, :n + p - 1, :n + p - 1] for x in whole]
    s = np.nan_to_num(apply(raw[0], pred.stats["spectral_mean"], pred.stats["spectral_std"]))
    a = np.nan_to_num(apply(raw[1], pred.stats["sar_mean"], pred.stats["sar_std"]))
    batch = [patches(torch.from_numpy(x[:, :16 + p - 1, :16 + p - 1].copy()), p) for x in (s, a, raw[2])]
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(*batch)
    flops = fc.get_total_flops() / batch[0].shape[0]
    out["flop_per_pixel"] = flops
    # the student: distilled on this scene (written beside the model), timed
    sp = student_path(f["bdgf"])
    if sp.exists():
        sp.unlink()
    t = time.perf_counter()
    student = student_for(f["bdgf"], pred, inputs, samples=DENSE_SAMPLES)
    out["distil_s"] = time.perf_counter() - t
    out["distillation"] = student.info
    out["student_flop_per_pixel"] = student.net.flops_per_pixel()
    bf16 = load_predictor(f["bdgf"])[0]
    bf16.batch_size, bf16.precision = pred.batch_size, "bf16"
    variants = {
        f"per-patch path (tiles of {pred.batch_size}, no shared layers)":
            lambda: predict_block(net, s, a, raw[2], p, pred.batch_size, share=False),
        "exact path, shared first layers (default)": lambda: pred.predict_block(*raw),
        "--fast bf16": lambda: bf16.predict_block(*raw),
        "--fast student": lambda: student.predict_block(*raw),
    }
    out["teacher_agreement_note"] = "student distilled on DENSE_SAMPLES pixels (classify's default: 16384)"
    ref = variants["exact path, shared first layers (default)"]()
    assert np.allclose(variants[list(variants)[0]](), ref, atol=1e-5)
    res: dict = {k: {"wall": [], "cpu": []} for k in variants}
    for _ in range(repeats):  # interleaved, so that the machine's load hits every variant alike
        for k, fn in variants.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            res[k]["wall"].append(n * n / (time.perf_counter() - t))
            res[k]["cpu"].append(n * n / (time.process_time() - c))
    out["variants"] = {k: {"px_per_s": stats(v["wall"]), "px_per_cpu_s": stats(v["cpu"])} for k, v in res.items()}
    # each branch's share of the exact path's time (forward hooks around the branches)
    times, handles = _branch_times(net)
    t = time.perf_counter()
    pred.predict_block(*raw)
    total = time.perf_counter() - t
    for h in handles:
        h.remove()
    times.pop("_start", None)
    out["branch_s"] = {**times, "total": total}
    # whole-map agreement and accuracy on the 200 x 200 scene
    maps = {}
    for k, pr in (("exact", pred), ("bf16", bf16), ("student", student)):
        t = time.perf_counter()
        maps[k] = pr.predict_block(*whole).argmax(0)
        out[f"whole_map_s_{k}"] = time.perf_counter() - t
    gt = load_ground_truth(f["scene"] / "groundtruth.gpkg", spec_src.grid)
    labels = gt.labels[:DENSE_MAP, :DENSE_MAP]
    codes = np.asarray(pred.codes)
    lab = labels > 0
    for k, m in maps.items():
        out[f"agreement_{k}"] = float((m == maps["exact"]).mean())
        out[f"oa_{k}"] = assess(labels[lab], codes[m][lab], list(codes)).oa
    out["labelled_pixels"] = int(lab.sum())
    out["pixels"] = int(maps["exact"].size)
    out["sizes"] = {"block": DENSE_BLOCK, "map": DENSE_MAP, "samples": DENSE_SAMPLES}
    # end to end through the command line with the student (reused from beside the model)
    out["cli_student_200"] = measured("classify", "--model", f["bdgf"], "--spectral", f["spectral"], "--sar",
                                      f["sar"], "--features", f["feat"], "--out", f["work"] / "m_student_200.tif",
                                      "--fast", "student")
    return out


def dense_rates(repeats: int) -> dict:
    """Pixels per CPU-second of the per-patch path, the exact path, --fast bf16 and --fast student: the paper
    network with random weights (rates do not depend on them), one torch thread, interleaved repeats."""
    import torch

    from bdgf_core.bdgf_model import BDGFPredictor
    from bdgf_core.network.bdgf import BDGFConfig, BDGFNet
    from bdgf_core.network.student import StudentNet
    from bdgf_core.student import StudentPredictor
    from bdgf_core.training import predict_block

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = BDGFNet(60, 2, 32, 7, BDGFConfig()).eval()
    st = {"spectral_mean": np.zeros(60, np.float32), "spectral_std": np.ones(60, np.float32),
          "sar_mean": np.zeros(2, np.float32), "sar_std": np.ones(2, np.float32)}
    pred = BDGFPredictor(net, st, list(range(1, 8)), batch_size=256)
    bf = BDGFPredictor(net, st, list(range(1, 8)), batch_size=256)
    bf.precision = "bf16"
    stu = StudentPredictor(StudentNet(94, 7, 9).eval(), st, list(range(1, 8)), True)
    rng = np.random.default_rng(0)
    b16, b128 = ([rng.standard_normal((c, n + 8, n + 8)).astype(np.float32) for c in (60, 2, 32)] for n in (16, 128))
    variants = {"per-patch": (lambda: predict_block(net, *b16, 9, 256, share=False), 256),
                "exact, shared first layers (default)": (lambda: pred.predict_block(*b16), 256),
                "--fast bf16": (lambda: bf.predict_block(*b16), 256),
                "--fast student": (lambda: stu.predict_block(*b128), 128 * 128)}
    for fn, _ in variants.values():
        fn()
    res: dict = {k: [] for k in variants}
    for _ in range(repeats):
        for k, (fn, n) in variants.items():
            c = time.process_time()
            fn()
            res[k].append(n / (time.process_time() - c))
    out = {"px_per_cpu_s": {k: stats(v) for k, v in res.items()}, "matmul_1thread_1024": matmul_flops(repeats, 1024),
           "student_flop_per_pixel": stu.net.flops_per_pixel()}
    torch.set_num_threads(threads)
    return out


def report_dense(d: dict, path: Path) -> None:
    """docs/bench/dense.md from the dense part's figures."""
    mm = d["matmul"]["median"]
    f = d["flop_per_pixel"]
    v = d["variants"]
    base = v[[k for k in v if k.startswith("per-patch")][0]]["px_per_s"]["median"]
    base_cpu = v[[k for k in v if k.startswith("per-patch")][0]]["px_per_cpu_s"]["median"]
    lines = ["# Dense inference (issue 16): exact path, bf16 and the distilled student", "",
             "Written by `benchmarks/bench_classify.py --parts dense` from dense.json; do not edit by hand. "
             "What can be shared exactly and what cannot: docs/DENSE.md.", "",
             f"Command: `{d['command']}` ({d['date']}, load average {', '.join(f'{x:.1f}' for x in d['loadavg'])} "
             f"at the end: the 2 cores were shared with other jobs). Machine: {cpu_model()}, torch threads "
             f"{d['threads']}; fp32 matmul (2048^2) {fmt(d['matmul'], 0)} FLOP/s -> {mm / 1e9:.0f} GFLOP/s (median).",
             "", f"BDGF paper network ({f / 1e6:.1f} MFLOP per pixel, per-patch forward), 2 epochs on the generated "
             "200 x 200 scene (60 + 2 bands, 32 diffusion-feature channels); a "
             f"{d['sizes']['block']} x {d['sizes']['block']} block, repeats interleaved. Rates min / median / max.", "",
             "| variant | pixels/s (wall) | pixels/s of CPU time | x per-patch (wall, CPU) | effective FLOP/s "
             "(per-patch FLOPs x rate) / matmul |", "|---|---|---|---|---|"]
    for k, x in v.items():
        w, c = x["px_per_s"], x["px_per_cpu_s"]
        lines.append(f"| {k} | {fmt(w)} | {fmt(c)} | {w['median'] / base:.1f}, {c['median'] / base_cpu:.1f} | "
                     f"{f * w['median'] / mm:.2f} |")
    b = d["branch_s"]
    lines += ["", "Time of each branch in one exact prediction of the block (forward hooks): "
              + ", ".join(f"{k} {b[k]:.2f} s ({b[k] / b['total']:.0%})" for k in ("cnn", "trans", "mamba") if k in b)
              + f", of {b['total']:.2f} s.", ""]
    ds = d["distillation"]
    lines += [f"Student: {d['student_flop_per_pixel'] / 1e6:.2f} MFLOP per pixel; distilled in {d['distil_s']:.0f} s "
              f"(teacher's probabilities on {ds['samples']} sampled pixels: {ds['teacher_s']:.0f} s; {ds['steps']} "
              f"Adam steps), agreement with the teacher on {ds['held_out_pixels']} held-out pixels "
              f"{ds['agreement_held_out']:.2%}.", "",
              f"Map of the scene's top-left {d['sizes']['map']} x {d['sizes']['map']} pixels ({d['pixels']} pixels, "
              "with the scene's border; the whole scene would take the exact path too long on this shared machine); "
              f"OA over its {d['labelled_pixels']} labelled pixels, training pixels included, so compare the rows, "
              "not the level:", "",
              "| map | agreement with the exact map | OA | time for the whole scene (s) |", "|---|---|---|---|"]
    for k in ("exact", "bf16", "student"):
        lines.append(f"| {k} | {d[f'agreement_{k}']:.2%} | {d[f'oa_{k}']:.2f} | {d[f'whole_map_s_{k}']:.1f} |")
    c = d["cli_student_200"]
    lines += ["", f"`classify --fast student` on the whole 200 x 200 scene (student reused from beside the model): "
              f"{c['seconds']:.1f} s, peak resident {c['peak_mb']:.0f} MB."]
    path.write_text("\n".join(lines) + "\n")


PARTS = ("throughput", "memory", "scaling-rf", "scaling-bdgf", "diffusion", "diffusion-scaling")
#: Parts run only when asked for (--parts): they need a CUDA GPU.
GPU_PARTS = ("throughput-gpu",)
#: Parts run only when asked for, each writing a file of its own (docs/bench/<part>.md).
OWN_PARTS = ("dense", "dense-rates")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bdgf_bench_classify")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strip-rows", type=int, default=4)
    ap.add_argument("--scale-repeats", type=int, default=1, help="repeats of the BDGF and diffusion scaling runs")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated parts to (re)run; '' only rewrites the report from classify.json")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "classify.md"))
    ap.add_argument("--sizes", default="", help="scaling parts: scene sides to run (default 1000,2000,4000); the "
                    "other sizes' runs already in classify.json are kept")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: scenes of 200, 400 and 600 pixels a side, one run each, the scaling parts only")
    args = ap.parse_args()
    work = Path(args.work)
    raw_path = Path(args.out).with_suffix(".json")
    res = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    res.pop("scaling", None)  # replaced by scaling_rf and scaling_bdgf
    legacy = res.get("commands", {})
    for k in [k for k in legacy if k not in ("throughput", "memory", "diffusion")]:
        del legacy[k]
    if "diffusion" in legacy:  # its scaling half was rerun as the parts scaling-rf and scaling-bdgf
        legacy["diffusion"] = legacy["diffusion"].replace("--parts scaling,diffusion", "--parts diffusion")
    if "diffusion" in res:
        res["diffusion"].pop("runs", None)  # replaced by diffusion_scaling
    global SCALE_SIZES
    if args.sizes:
        SCALE_SIZES = tuple(int(x) for x in args.sizes.split(","))
    if args.quick:  # a smoke run: small mosaics, one run each, the scaling parts only
        SCALE_SIZES = (200, 400, 600)
        args.repeats, args.scale_repeats = 1, 1
        if args.parts == ",".join(PARTS):
            args.parts = "scaling-rf,scaling-bdgf,diffusion-scaling"
    parts = [x for x in args.parts.split(",") if x]
    parts = [y for x in parts for y in (["scaling-rf", "scaling-bdgf"] if x == "scaling" else [x])]
    if "throughput-gpu" in parts:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("the part throughput-gpu needs a CUDA GPU; this machine has none")
        if len(parts) > 1:
            raise SystemExit("run the part throughput-gpu alone: it writes its own file, classify_gpu.md")
    t0 = time.perf_counter()
    f = setup(work, parts)
    f["work"] = work
    print(f"setup {time.perf_counter() - t0:.0f} s", flush=True)
    unknown = set(parts) - set(PARTS) - set(GPU_PARTS) - set(OWN_PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; parts: {', '.join(PARTS + GPU_PARTS + OWN_PARTS)} "
                         "(scaling = scaling-rf,scaling-bdgf)")
    for part in parts:
        t = time.perf_counter()
        key = part.replace("-", "_")
        if part == "throughput":
            res[key] = throughput(f, args.repeats)
        elif part == "throughput-gpu":  # another machine than the CPU parts: a file of its own
            g = throughput_gpu(f, args.repeats)
            g.update(command="python benchmarks/bench_classify.py " + " ".join(sys.argv[1:]),
                     date=time.strftime("%Y-%m-%d"))
            out = Path(args.out).with_name("classify_gpu.md")
            out.with_suffix(".json").write_text(json.dumps(g, indent=1, default=str))
            report_gpu(g, out)
            print(f"{part} {time.perf_counter() - t:.0f} s, written {out}", flush=True)
            continue
        elif part == "dense":  # issue 16: a file of its own, docs/bench/dense.md
            d = dense(f, args.repeats)
            d.update(command="python benchmarks/bench_classify.py " + " ".join(sys.argv[1:]),
                     date=time.strftime("%Y-%m-%d"), loadavg=os.getloadavg())
            out = Path(args.out).with_name("dense.md")
            out.with_suffix(".json").write_text(json.dumps(d, indent=1, default=str))
            report_dense(d, out)
            print(f"{part} {time.perf_counter() - t:.0f} s, written {out}", flush=True)
            continue
        elif part == "dense-rates":  # no trained model needed: printed and kept in docs/bench/dense_rates.json
            d = dense_rates(args.repeats)
            d.update(command="OMP_NUM_THREADS=1 python benchmarks/bench_classify.py " + " ".join(sys.argv[1:]),
                     date=time.strftime("%Y-%m-%d"), loadavg=os.getloadavg())
            Path(args.out).with_name("dense_rates.json").write_text(json.dumps(d, indent=1, default=str))
            print(json.dumps(d, indent=1, default=str), flush=True)
            continue
        elif part == "memory":
            res[key] = memory(f, args.strip_rows)
        elif part == "scaling-rf":
            res[key] = scaling_rf(f, args.repeats)
        elif part == "scaling-bdgf":
            res[key] = scaling_bdgf(f, args.scale_repeats)
        elif part == "diffusion":
            mm = matmul_flops(args.repeats)  # with this run's threads
            res[key] = diffusion(f, args.repeats, mm)
        elif part == "diffusion-scaling":
            res[key] = diffusion_scaling(f, args.scale_repeats)
        env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
        res[key]["command"] = env + "python benchmarks/bench_classify.py " + " ".join(sys.argv[1:])
        res[key]["date"] = time.strftime("%Y-%m-%d")
        res[key]["loadavg"] = os.getloadavg()
        print(f"{part} {time.perf_counter() - t:.0f} s", flush=True)
        # several invocations may run side by side (one part each): merge with what is on disk now
        disk = json.loads(raw_path.read_text()) if raw_path.exists() else {}
        old = disk.get(key)
        if args.sizes and old and "runs" in old and old.get("memory_mb") == res[key].get("memory_mb"):
            runs = {**old["runs"], **{n: v for n, v in res[key]["runs"].items() if v}}  # other sizes kept
            res[key]["runs"] = dict(sorted(runs.items(), key=lambda kv: int(kv[0])))
        disk[key] = res[key]
        res = disk
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(json.dumps(res, indent=1, default=str))
        report(res, args, Path(args.out))
    if not parts and raw_path.exists():  # a rewrite of the report only: also drop the superseded figures
        raw_path.write_text(json.dumps(res, indent=1, default=str))
    report(res, args, Path(args.out))
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
