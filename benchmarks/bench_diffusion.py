"""Diffusion benchmark (issue 3): denoiser training speed, feature extraction time and memory.

    python benchmarks/bench_diffusion.py [--threads 1] [--big 2000] [--work /tmp/bdgf_bench]

Measured, each job in a fresh subprocess (wall time; peak memory = ``ru_maxrss`` of that
subprocess from ``os.wait4``):

1. Denoiser training steps/s on CPU for both profiles, on the embedded scene (``generate-scene``
   defaults: 200x200, 60 spectral + 2 SAR bands). 'fast' at its own settings (batch 8 of 32x32
   tiles, 8 denoiser bands); 'paper' at batch 2 of its 64x64 tiles, 64 denoiser bands (its
   batch of 20 would take minutes per step here). The first step (warm-up) is not counted.
2. Feature extraction with the 'fast' profile, streaming GeoTIFF -> GeoTIFF as 'Pretrain DDPM'
   does it, on the embedded scene and on a 2000x2000 scene (60 + 2 bands). ``generate-scene``
   cannot make 2000x2000 (its Voronoi step holds regions x pixels distances: about 70 GB), so
   that scene is a generated 500x500 scene mirrored 4x4. The diffusion model is a 'fast' model
   pretrained for 20 steps on the embedded scene: extraction time does not depend on the weights.

Writes docs/bench/diffusion.json and docs/bench/diffusion.md (linear_probe.py adds its section
to the same files). Also the shared helpers of the other diffusion benchmarks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cpu_model  # noqa: E402
DOCS = ROOT / "docs" / "bench"
RESULTS = DOCS / "diffusion.json"


# ---------------------------------------------------------------------------------------------
# Helpers shared with bench_profiles.py and linear_probe.py

def machine(threads: int) -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def worker(job: dict, threads: int = 1, timeout: float | None = None) -> dict:
    """Run ``job`` in a fresh Python process (``_worker`` below); adds its peak RSS in MiB."""
    argv = [sys.executable, str(Path(__file__).resolve()), "_worker", json.dumps(job)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import threading

    def drain(stream, sink):
        sink.append(stream.read())

    out_chunks: list[str] = []
    err_chunks: list[str] = []
    ts = [threading.Thread(target=drain, args=(p.stdout, out_chunks)),
          threading.Thread(target=drain, args=(p.stderr, err_chunks))]
    for t in ts:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    out, err = "".join(out_chunks), "".join(err_chunks)
    if p.returncode != 0:
        raise SystemExit(f"worker failed: {job}\n{out[-3000:]}\n{err[-3000:]}")
    last = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    res = last[-1] if last else {}
    peak = max(usage.ru_maxrss / 1024, res.pop("child_peak_rss_mib", 0.0))
    return {**res, "wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1)}


def cli_measured(args: list, threads: int = 1) -> dict:
    """``python -m bdgf_core ARGS --progress json`` in a worker: its outputs, wall time, peak RSS."""
    return worker({"kind": "cli", "args": [str(a) for a in args]}, threads)


def update_results(key: str, value, path: Path = RESULTS) -> None:
    """Store one section of results and re-render the markdown."""
    DOCS.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1) + "\n")
    if path == RESULTS:
        render(data)


def mirrored_scene(work: Path, size: int, bands: int, base: int = 500):
    """A size x size scene: a generated base x base scene mirrored into a mosaic (no seams)."""
    from osgeo import gdal

    from bdgf_core.raster import Grid, RasterSource, create_raster
    from bdgf_core.scene import Scene, generate_scene

    d = work / f"mirrored_{size}_{bands}"
    spec, sar = d / "spectral.tif", d / "sar.tif"
    if spec.exists() and sar.exists():
        return Scene(spec, sar, d / "groundtruth.gpkg")
    b = generate_scene(work / f"base_{base}_{bands}", size=min(base, size), bands=bands, seed=0)
    for src_path, dst in ((b.spectral, spec), (b.sar, sar)):
        src = RasterSource(src_path)
        a = src.read()
        g = src.grid
        grid = Grid(size, size, g.geotransform, g.crs_wkt)
        n = a.shape[1]
        d.mkdir(parents=True, exist_ok=True)
        with create_raster(dst, grid, a.shape[0], gdal.GDT_Float32, None) as w:
            for i in range(0, size, n):
                for j in range(0, size, n):
                    t = a[:, ::-1] if (i // n) % 2 else a
                    t = t[:, :, ::-1] if (j // n) % 2 else t
                    w.write(i, j, np.ascontiguousarray(t[:, :size - i, :size - j]))
    return Scene(spec, sar, d / "groundtruth.gpkg")


# ---------------------------------------------------------------------------------------------
# Worker jobs (run in a fresh process)

def _job_cli(job: dict) -> dict:
    cmd = [sys.executable, "-m", "bdgf_core", *job["args"], "--progress", "json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the CLI process
    return {**next(e["outputs"] for e in events if e["event"] == "result"), "child_peak_rss_mib": child}


def _read_scene(spectral: str, sar: str):
    from bdgf_core.raster import RasterSource

    return RasterSource(spectral).read(), RasterSource(sar).read()


def _job_steps(job: dict) -> dict:
    """Time pretraining steps: per-step times from the progress callback (first one = warm-up)."""
    import torch

    from bdgf_core.diffusion import DiffusionConfig, pretrain_ddpm

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spe, sar = _read_scene(job["spectral"], job["sar"])
    if job.get("crop"):
        c = job["crop"]
        spe, sar = spe[:, :c, :c], sar[:, :c, :c]
    cfg = DiffusionConfig.from_profile(job["profile"], feature_channels=0, **job.get("overrides", {}))
    stamps = []

    def progress(f, msg):
        if "loss" in msg:
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    model = pretrain_ddpm(spe, sar, None, cfg, progress=progress)
    steps = np.diff([t0] + stamps)
    out = {"profile": cfg.profile, "batch": cfg.batch, "tile": cfg.tile, "denoiser_bands": model.n_padded,
           "step_seconds": [round(float(s), 3) for s in steps],
           "step_s": float(np.mean(steps[1:])) if len(steps) > 1 else float(steps[0]),
           "cost": model.cost()}
    if job.get("save"):
        model.save(job["save"])
    return out


def _job_extract(job: dict) -> dict:
    """Stream features GeoTIFF -> GeoTIFF as cmd_pretrain does (the projection fit is not timed)."""
    import torch
    from osgeo import gdal

    from bdgf_core.diffusion import DiffusionConfig, DiffusionModel, extract_features, fit_projection
    from bdgf_core.raster import Grid, RasterSource, create_raster

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = DiffusionModel.load(job["model"])
    spec, sar = RasterSource(job["spectral"]), RasterSource(job["sar"])
    H, W = spec.height, spec.width

    def read_window(r0, r1, c0, c1):
        return spec.read(r0, r1, c0, c1), sar.read(r0, r1, c0, c1)

    if model.projection is None:  # as pretraining leaves it (not timed: pretraining does this)
        model.config.feature_channels = DiffusionConfig.from_profile(model.config.profile).feature_channels
        fit_projection(model, read_window, H, W)

    g = spec.grid
    t0 = time.perf_counter()
    tile = job.get("tile") or model.config.feature_tile
    with create_raster(job["out"], Grid(W, H, g.geotransform, g.crs_wkt), model.output_channels,
                       gdal.GDT_Float32, None) as w:
        extract_features(model, read_window, H, W, w.write, tile=tile)
    return {"seconds": time.perf_counter() - t0, "height": H, "width": W, "tile": tile, "halo": model.net.receptive_radius_of(max(model.config.layers) + 1),
            "channels": model.output_channels, "profile": model.config.profile}


def _worker(job: dict) -> None:
    fn = {"cli": _job_cli, "steps": _job_steps, "extract": _job_extract}
    if job["kind"] not in fn:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_profiles import JOBS

        fn.update(JOBS)
    print(json.dumps(fn[job["kind"]](job)), flush=True)


# ---------------------------------------------------------------------------------------------
# Markdown

def _fmt(v, nd=2):
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def render(data: dict) -> None:
    lines = ["# Diffusion benchmark (issue 3)", "",
             "Written by `benchmarks/bench_diffusion.py` and `benchmarks/linear_probe.py` from "
             "`docs/bench/diffusion.json`; do not edit by hand.", ""]
    b = data.get("bench")
    if b:
        m = b["machine"]
        lines += ["## Training speed and feature extraction", "",
                  f"Command: `{b['command']}`  ", f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
                  f"{m['torch_threads']} torch thread(s), {m['date']}; other work was running on the machine, so "
                  "absolute times are noisy: compare within the table.", "",
                  "| profile | input of one step (batch x bands x tile) | s/step | steps/s | MFLOP per training pixel | peak RSS (MiB) |",
                  "|---|---|---|---|---|---|"]
        for r in b["steps"]:
            lines.append(f"| {r['profile']} | {r['batch']} x {r['denoiser_bands']} x {r['tile']}x{r['tile']} | "
                         f"{r['step_s']:.3f} | {1 / r['step_s']:.2f} | {r['cost']['train_flops_per_pixel'] / 1e6:.2f} | "
                         f"{r['peak_rss_mib']:.0f} |")
        lines += ["", "Feature extraction ('fast' profile, streaming GeoTIFF -> GeoTIFF as 'Pretrain DDPM' does):", "",
                  "| scene | pixels | channels | seconds | µs per pixel | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
        for r in b["extract"]:
            px = r["height"] * r["width"]
            lines.append(f"| {r['scene']} | {r['height']} x {r['width']} | {r['channels']} | {r['seconds']:.1f} | "
                         f"{r['seconds'] / px * 1e6:.1f} | {r['peak_rss_mib']:.0f} |")
        lines += ["", b.get("notes", ""), ""]
    p = data.get("probe")
    if p:
        pairs = list(p["pairs"])
        lines += ["## Linear probe: does masking keep the SAR information? (issue 3)", "",
                  f"Command: `{p['command'].strip()}` ({p['threads']} torch thread(s); this invocation took "
                  f"{p['seconds'] / 60:.0f} min, feature rasters are reused from the work folder when present)", "",
                  "Embedded scene; `pretrain --profile fast` per seed with masking (Algorithm 1) and with "
                  "`--no-masking`; logistic regression (scikit-learn, standardised inputs) on the diffusion "
                  f"features alone, polygon split (training and test pixels from different polygons), "
                  f"{len(p['split_seeds'])} split seeds averaged per row. SAR-only pairs: balanced accuracy of a probe "
                  "on those two classes only (50 % = chance); all classes: overall accuracy.", "",
                  "| pretraining seed | masking | " + " | ".join(f"{p['pairs'][k]} (%)" for k in pairs) + " | all classes OA (%) |",
                  "|---|---|" + "---|" * (len(pairs) + 1)]
        for r in p["rows"]:
            lines.append(f"| {r['seed']} | {'on' if r['masking'] else 'off'} | "
                         + " | ".join(f"{r[k]:.1f}" for k in pairs) + f" | {r['oa']:.1f} |")
        for masking in (True, False):
            rows = [r for r in p["rows"] if r["masking"] == masking]
            if rows:
                lines.append(f"| **mean** | **{'on' if masking else 'off'}** | "
                             + " | ".join(f"**{np.mean([r[k] for r in rows]):.1f}**" for k in pairs)
                             + f" | **{np.mean([r['oa'] for r in rows]):.1f}** |")
        on = {r["seed"]: r for r in p["rows"] if r["masking"]}
        off = {r["seed"]: r for r in p["rows"] if not r["masking"]}
        both = sorted(set(on) & set(off))
        if both:
            lines.append("")
            for k in pairs + ["oa"]:
                d = [on[s_][k] - off[s_][k] for s_ in both]
                what = p["pairs"].get(k, "all classes (OA)")
                lines.append(f"- masking minus no masking, {what}: {np.mean(d):+.1f} pp on average; masking better "
                             f"in {sum(x > 0 for x in d)} of {len(d)} seeds (differences {', '.join(f'{x:+.1f}' for x in d)}).")
        lines += ["", p.get("verdict", ""), ""]
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "diffusion.md").write_text("\n".join(lines).rstrip() + "\n")


# ---------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big", type=int, default=2000, help="side of the large scene")
    ap.add_argument("--work", default="/tmp/bdgf_bench")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from linear_probe import scene

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sc = scene(work)
    model = work / "fast_20steps.bdgf"
    from bench_profiles import cached

    steps = [cached(work, "diffusion/steps/fast", worker,
                    {"kind": "steps", "spectral": str(sc.spectral), "sar": str(sc.sar), "profile": "fast",
                     "overrides": {"steps": 20}, "save": str(model)}, args.threads),
             cached(work, "diffusion/steps/paper", worker,
                    {"kind": "steps", "spectral": str(sc.spectral), "sar": str(sc.sar), "profile": "paper",
                     "overrides": {"steps": 2, "batch": 2}}, args.threads)]
    print(json.dumps(steps), flush=True)
    extract = []
    for name, s in (("embedded (200 x 200, 60 + 2 bands)", sc),
                    (f"mirrored {args.big} x {args.big}, 60 + 2 bands", mirrored_scene(work, args.big, 60))):
        tag = Path(s.spectral).parent.name
        r = cached(work, f"diffusion/extract/{tag}", worker,
                   {"kind": "extract", "model": str(model), "spectral": str(s.spectral), "sar": str(s.sar),
                    "out": str(work / f"bench_feat_{tag}.tif")}, args.threads)
        extract.append({"scene": name, **r})
        print(json.dumps(extract[-1]), flush=True)
    update_results("bench", {
        "command": "python benchmarks/bench_diffusion.py " + shlex.join(sys.argv[1:]),
        "machine": machine(args.threads), "steps": steps, "extract": extract,
        "notes": ("'paper' steps: batch 2 (not its 20) of 64x64 tiles; a step's cost is linear in the batch, so "
                  "its batch-20 step takes about 10x the time shown. Peak RSS of the training rows includes "
                  "reading the scene. Extraction peak RSS is bounded by the tile, not the scene: the 2000 x 2000 "
                  "scene is read window by window."),
    })


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        _worker(json.loads(sys.argv[2]))
    else:
        main()
