"""The 'fast' diffusion profile against 'paper' (issue 10): design sweep, speed, memory, accuracy.

    python benchmarks/bench_profiles.py sweep     [--threads 1]   # timestep/layer, channels, variants
    python benchmarks/bench_profiles.py timing    [--threads 1]   # time and peak memory, both profiles
    python benchmarks/bench_profiles.py accuracy  [--epochs 10] [--seeds 0 1 2] [--jobs 2]
    python benchmarks/bench_profiles.py render                    # docs/bench/profiles.md from the JSON

Scenes: the embedded scene (``generate-scene`` defaults: 200x200, 60 spectral + 2 SAR bands,
seed 0) and its ``--variant hard``; for timing also a 1000x1000 scene with 128 bands (a
generated 500x500 scene mirrored 2x2: ``generate-scene`` itself needs regions x pixels floats,
about 4.5 GB at 1000x1000).

sweep. A model with the fast architecture (300 steps, seed 0) per scene gives raw features at
t in SWEEP_T for each decoder layer; a linear probe (logistic regression on the features alone,
polygon split, split seeds 0-2; benchmarks/linear_probe.py) scores each (t, layer), pairs of t,
and the PCA-whitened channel count after extraction. Variants of the denoiser's input and
width (hard scene, 100 steps each) are timed per step and probed the same way.

timing. Each job runs in a fresh process (peak memory = its ``ru_maxrss``). 'fast': the
whole ``pretrain --profile fast`` command (its defaults). 'paper': 30000 steps of batch 20 cannot
run here, so two steps are measured at batch 2 (the first = warm-up, not counted) and the
per-step time is scaled by 10 (batch 20: a convolution's cost is linear in the batch) and by
30000; its feature extraction is measured on one 64x64 tile (with its halo) and scaled to the
windows the full tiling and the projection fit compute. Both extrapolations are labelled.

accuracy. ``train`` through the command line (polygon split, 50 training pixels per class,
``--epochs``) for each split/initialisation seed with: 'fast' features (``pretrain --profile
fast``, defaults); 'paper' features (the paper's architecture, timesteps and 64 PCA-whitened
channels, but only PAPER_STEPS steps of batch 2 — CPU-bound; see docs/DIFFUSION.md); and with
the diffusion guidance off (no features). Test OA on the held-out polygons.

Writes docs/bench/profiles.json and docs/bench/profiles.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_diffusion import DOCS, cli_measured, machine, mirrored_scene, worker  # noqa: E402
from linear_probe import ground_truth, mean_probe, scene, splits  # noqa: E402

RESULTS = DOCS / "profiles.json"
SWEEP_T = (1, 5, 10, 25, 50, 100, 200, 400)
SPLIT_SEEDS = (0, 1, 2)
PAPER_STEPS = 40
NO_GUIDE = ["--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba"]


_CACHE_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(work: Path):
    """The cache file, locked against other threads and processes (benchmarks may run side by side)."""
    import fcntl

    with _CACHE_LOCK, open(work / "cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield work / "cache.json"


def cached(work: Path, key: str, fn, *args):
    """fn(*args), remembered in work/cache.json under key: an interrupted run resumes where it was."""
    with _locked(work) as path:
        cache = json.loads(path.read_text()) if path.exists() else {}
    if key in cache:
        return cache[key]
    value = fn(*args)
    with _locked(work) as path:
        cache = json.loads(path.read_text()) if path.exists() else {}
        cache[key] = value
        path.write_text(json.dumps(cache, indent=1))
    return value


def update(key: str, value) -> dict:
    DOCS.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    render(data)
    return data


def _scene_arrays(sc):
    from bdgf_core.raster import RasterSource

    return RasterSource(sc.spectral).read(), RasterSource(sc.sar).read()


# ---------------------------------------------------------------------------------------------
# Worker jobs (run by bench_diffusion.py's _worker in a fresh process)

def _job_variant(job: dict) -> dict:
    """Pretrain one variant, extract its features (npy); per-step time."""
    import os

    import torch

    from bdgf_core.diffusion import DiffusionConfig, extract_features_array, pretrain_ddpm

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sc = scene(Path(job["work"]), job["variant"])
    spe, sar = _scene_arrays(sc)
    if job.get("bins"):  # band binning instead of PCA: the mean of adjacent bands
        spe = np.stack([b.mean(0) for b in np.array_split(spe, job["bins"])])
    cfg = DiffusionConfig.from_profile("fast", **job["overrides"])
    stamps = []
    t0 = time.perf_counter()
    model = pretrain_ddpm(spe, sar, None, cfg, progress=lambda f, m: stamps.append(time.perf_counter()) if "loss" in m else None)
    steps = np.diff([t0] + stamps)
    t1 = time.perf_counter()
    feats = extract_features_array(model, spe, sar)
    t2 = time.perf_counter()
    np.save(job["out"], feats)
    cost = model.cost()
    return {"step_s": float(np.mean(steps[1:])), "extract_s": t2 - t1, "denoiser_bands": model.n_padded,
            "parameters": cost["parameters"], "train_mflop_px": cost["train_flops_per_pixel"] / 1e6,
            "feature_mflop_px": cost["feature_flops_per_pixel"] / 1e6}


def _job_sweep_model(job: dict) -> dict:
    """The fast architecture with raw features at every SWEEP_T timestep (npy)."""
    out = _job_variant({**job, "overrides": {"timesteps": SWEEP_T, "feature_channels": 0, "seed": 0}})
    return out


def _job_paper_extract(job: dict) -> dict:
    """Time paper-profile extraction on a crop (one tile with halo); random projection (cost only)."""
    import os

    import torch

    from bdgf_core.diffusion import DiffusionConfig, DiffusionModel, extract_features_array
    from bdgf_core.diffusion.pretrain import fit_scaling

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from bdgf_core.raster import RasterSource

    c = int(job["crop"])
    spe = RasterSource(job["spectral"]).read(0, c, 0, c)
    sar = RasterSource(job["sar"]).read(0, c, 0, c)
    cfg = DiffusionConfig.from_profile("paper")
    torch.manual_seed(0)
    model = DiffusionModel(cfg, spe.shape[0], sar.shape[0], fit_scaling(spe, sar, np.ones((c, c), bool), 0))
    D = model.raw_feature_channels
    rng = np.random.default_rng(0)
    model.projection = {"mean": np.zeros(D, np.float32), "std": np.ones(D, np.float32),
                        "components": rng.normal(size=(D, cfg.feature_channels)).astype(np.float32)}
    t0 = time.perf_counter()
    extract_features_array(model, spe, sar, tile=c)
    sec = time.perf_counter() - t0
    halo = model.net.receptive_radius
    return {"seconds": sec, "window_px": (c + 2 * halo) ** 2, "timesteps": len(cfg.timesteps), "halo": halo,
            "denoiser_bands": model.n_padded, "cost": model.cost()}


def _job_paper_features(job: dict) -> dict:
    """'paper' features for the accuracy runs: paper architecture/timesteps/projection, few steps."""
    import os

    import torch
    from osgeo import gdal

    from bdgf_core.diffusion import DiffusionConfig, extract_features_array, pretrain_ddpm
    from bdgf_core.diffusion.features import _project, projection_from_samples
    from bdgf_core.raster import RasterSource, create_raster

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sc = scene(Path(job["work"]), job["variant"])
    spe, sar = _scene_arrays(sc)
    cfg = DiffusionConfig.from_profile("paper", steps=job["steps"], batch=job["batch"], tile=job["tile"],
                                       feature_channels=0, seed=0)
    t0 = time.perf_counter()
    model = pretrain_ddpm(spe, sar, None, cfg)
    t1 = time.perf_counter()
    H, W = spe.shape[1:]
    raw = extract_features_array(model, spe, sar, tile=max(H, W))  # one window: least halo work
    t2 = time.perf_counter()
    rng = np.random.default_rng(1)
    pick = rng.choice(H * W, min(20000, H * W), replace=False)
    X = torch.from_numpy(raw.reshape(raw.shape[0], -1)[:, pick].T.astype(np.float64))
    model.projection = projection_from_samples(X, 64)
    model.config.feature_channels = 64
    feats = _project(model, torch.from_numpy(raw)).numpy()
    src = RasterSource(sc.spectral)
    with create_raster(job["out"], src.grid, feats.shape[0], gdal.GDT_Float32, None) as w:
        w.ds.SetMetadataItem("BDGF_DIFFUSION_MODEL_ID", str(model.model_id))
        w.ds.SetMetadataItem("BDGF_DIFFUSION_PROFILE", "paper")
        w.write(0, 0, feats)
    model.save(str(job["out"]).replace(".tif", ".bdgf"))
    return {"pretrain_s": t1 - t0, "extract_s": t2 - t1, "steps": cfg.steps, "batch": cfg.batch, "tile": cfg.tile}


JOBS = {"variant": _job_variant, "sweep_model": _job_sweep_model, "paper_extract": _job_paper_extract,
        "paper_features": _job_paper_features}


# ---------------------------------------------------------------------------------------------
# sweep

def _slice(raw: np.ndarray, ts: tuple, layer_ch: list[int], t_sel, layer_sel) -> np.ndarray:
    """Channels of raw (timestep-major, layers deepest first) for timesteps t_sel and layers layer_sel."""
    per_t = sum(layer_ch)
    starts = np.cumsum([0] + layer_ch)
    idx = [ts.index(t) * per_t + np.arange(starts[k], starts[k + 1]) for t in t_sel for k in layer_sel]
    return raw[np.concatenate(idx)]


def cmd_sweep(args) -> None:
    from bdgf_core.diffusion import DiffusionConfig
    from bdgf_core.diffusion.features import projection_from_samples
    from bdgf_core.scene import SAR_ONLY_PAIRS

    import torch

    work = Path(args.work)
    layer_ch = [32, 16]  # decoder concatenations of widths (8, 16, 32), deepest first
    out: dict = {"command": "python benchmarks/bench_profiles.py " + shlex.join(sys.argv[1:]),
                 "machine": machine(args.threads), "timesteps": list(SWEEP_T), "scenes": {}}
    started = time.time()
    for variant in ("standard", "hard"):
        sc = scene(work, variant)
        gt = ground_truth(sc)
        sp = splits(gt, SPLIT_SEEDS)
        npy = work / f"sweep_{variant}.npy"
        if not npy.exists():
            worker({"kind": "sweep_model", "work": str(work), "variant": variant, "out": str(npy)}, args.threads)
        raw = np.load(npy)
        res: dict = {"single": {}, "pairs": {}, "channels": {}}
        for t in SWEEP_T:
            for name, layers in (("deepest", [0]), ("shallow", [1]), ("both", [0, 1])):
                r = mean_probe(_slice(raw, SWEEP_T, layer_ch, [t], layers), gt, sp, SAR_ONLY_PAIRS)
                res["single"][f"{t}/{name}"] = {k: v for k, v in r.items() if k != "runs"}
                print(variant, t, name, round(r["oa"], 2), flush=True)
        out["scenes"][variant] = res
    # best single timesteps (both layers), by the mean OA over the two scenes
    def score(key):
        return np.mean([out["scenes"][v]["single"][key]["oa"] for v in out["scenes"]])

    ranked = sorted(SWEEP_T, key=lambda t: -score(f"{t}/both"))
    top = ranked[:4]
    combos = [(a, b) for i, a in enumerate(top) for b in top[i + 1:]]
    combos += [(ranked[0], t) for t in ranked[4:]]  # the best with each of the others
    for variant in ("standard", "hard"):
        sc = scene(work, variant)
        gt = ground_truth(sc)
        sp = splits(gt, SPLIT_SEEDS)
        raw = np.load(work / f"sweep_{variant}.npy")
        res = out["scenes"][variant]
        for a, b in combos:
            r = mean_probe(_slice(raw, SWEEP_T, layer_ch, sorted((a, b)), [0, 1]), gt, sp, SAR_ONLY_PAIRS)
            res["pairs"][f"{min(a, b)},{max(a, b)}"] = {k: v for k, v in r.items() if k != "runs"}
        # channel reduction after extraction, on the profile's timesteps
        fast_t = DiffusionConfig.from_profile("fast").timesteps
        sub = _slice(raw, SWEEP_T, layer_ch, fast_t, [0, 1])
        rng = np.random.default_rng(1)
        pick = rng.choice(sub.shape[1] * sub.shape[2], 20000, replace=False)
        X = torch.from_numpy(sub.reshape(sub.shape[0], -1)[:, pick].T.astype(np.float64))
        for ch in (8, 16, 32, 64):
            if ch > sub.shape[0]:
                continue
            p = projection_from_samples(X, ch)
            z = (sub.reshape(sub.shape[0], -1).T - p["mean"]) / p["std"] @ p["components"]
            f = z.T.reshape(-1, *sub.shape[1:]).astype(np.float32)
            r = mean_probe(f, gt, sp, SAR_ONLY_PAIRS)
            res["channels"][str(ch)] = {k: v for k, v in r.items() if k != "runs"}
        r = mean_probe(sub, gt, sp, SAR_ONLY_PAIRS)
        res["channels"][f"raw {sub.shape[0]}"] = {k: v for k, v in r.items() if k != "runs"}
        res["channels_timesteps"] = list(fast_t)
    out["ranked_single"] = [[t, score(f"{t}/both")] for t in ranked]
    out["seconds"] = round(time.time() - started, 1)
    update("sweep", out)


VARIANTS = {  # name -> (config overrides, band bins)
    "fast (PCA 6 + 2 SAR = 8 bands, widths 8-16-32)": ({}, None),
    "no spectral reduction (62 -> 64 bands)": ({"spectral_components": 0}, None),
    "band binning to 6 (8 bands)": ({"spectral_reduction": "bins"}, None),
    "PCA 14 (16 bands)": ({"spectral_components": 14}, None),
    "one level, widths 8-16 (PCA 6)": ({"widths": (8, 16)}, None),
    "before issue 10: widths 8-16-32-32, no reduction": ({"widths": (8, 16, 32, 32), "spectral_components": 0,
                                                          "channels_last": False, "extract_batch": 1,
                                                          "extract_tile": 0}, None),
}


def cmd_variants(args) -> None:
    from bdgf_core.scene import SAR_ONLY_PAIRS

    work = Path(args.work)
    rows = []
    started = time.time()
    names = [n for n in VARIANTS if not args.only or any(o in n for o in args.only)]
    for variant in ("hard",):
        sc = scene(work, variant)
        gt = ground_truth(sc)
        sp = splits(gt, SPLIT_SEEDS)
        for name in names:
            ov, bins = VARIANTS[name]
            for seed in args.seeds:
                npy = work / f"variant_{variant}_{list(VARIANTS).index(name)}_{args.steps}_{seed}.npy"
                r = worker({"kind": "variant", "work": str(work), "variant": variant, "out": str(npy), "bins": bins,
                            "overrides": {"steps": args.steps, "seed": seed, **ov}}, args.threads)
                p = mean_probe(np.load(npy), gt, sp, SAR_ONLY_PAIRS)
                rows.append({"name": name, "scene": variant, "seed": seed, **r,
                             **{k: v for k, v in p.items() if k != "runs"}})
                print(json.dumps(rows[-1]), flush=True)
    update(f"variants_{args.steps}", {"command": "python benchmarks/bench_profiles.py " + shlex.join(sys.argv[1:]),
                                      "machine": machine(args.threads), "steps": args.steps, "rows": rows,
                                      "seconds": round(time.time() - started, 1)})


# ---------------------------------------------------------------------------------------------
# timing

def _windows_px(H: int, W: int, tile: int, halo: int) -> int:
    """Pixels the U-Net computes for a full tiling (each tile plus its halo)."""
    rows = [min(tile, H - r) for r in range(0, H, tile)]
    cols = [min(tile, W - c) for c in range(0, W, tile)]
    return sum((h + 2 * halo) * (w + 2 * halo) for h in rows for w in cols)


def cmd_timing(args) -> None:
    from bdgf_core.diffusion import DiffusionConfig

    work = Path(args.work)
    paper = DiffusionConfig.from_profile("paper")
    rows = []
    started = time.time()
    if args.fresh:  # measure again: times of another day (another load on the machine) do not mix
        with _locked(work) as path:
            if path.exists():
                cache = json.loads(path.read_text())
                path.write_text(json.dumps({k: v for k, v in cache.items() if not k.startswith("timing/")}))
    for name, sc in (("embedded 200 x 200, 60 + 2 bands", scene(work)),
                     ("mirrored 1000 x 1000, 128 + 2 bands", mirrored_scene(work, 1000, 128))):
        tag = Path(sc.spectral).parent.name
        fast = cached(work, f"timing/{tag}/fast", cli_measured,
                      ["pretrain", "--spectral", str(sc.spectral), "--sar", str(sc.sar), "--profile", "fast",
                       "--model", str(work / f"timing_fast_{tag}.bdgf"),
                       "--features", str(work / f"timing_fast_{tag}.tif")], args.threads)
        print(json.dumps(fast), flush=True)
        steps = cached(work, f"timing/{tag}/paper_steps", worker,
                       {"kind": "steps", "spectral": str(sc.spectral), "sar": str(sc.sar), "profile": "paper",
                        "overrides": {"steps": 4, "batch": 2}}, args.threads)  # the first step is the warm-up
        print(json.dumps(steps), flush=True)
        ext = cached(work, f"timing/{tag}/paper_extract", worker,
                     {"kind": "paper_extract", "spectral": str(sc.spectral), "sar": str(sc.sar), "crop": 64},
                     args.threads)
        print(json.dumps(ext), flush=True)
        from bdgf_core.raster import RasterSource

        src = RasterSource(sc.spectral)
        H, W = src.height, src.width
        halo = ext["halo"]
        per_px_t = ext["seconds"] / (ext["window_px"] * ext["timesteps"])
        fit_px = paper.fit_tiles * (min(64, H) + 2 * halo) * (min(64, W) + 2 * halo)
        extract_est = per_px_t * ext["timesteps"] * (_windows_px(H, W, paper.feature_tile, halo) + fit_px)
        step20 = steps["step_s"] * paper.batch / steps["batch"]
        paper_total = step20 * paper.steps + extract_est
        fast_total = fast["pretrain_seconds"] + fast["features_seconds"]
        fast_step = fast.get("pretrain_seconds") / DiffusionConfig.from_profile("fast").steps
        rows.append({"scene": name, "fast": fast, "paper_steps": steps, "paper_extract": ext,
                     "paper_step_batch20_s": step20, "paper_extract_est_s": extract_est,
                     "paper_total_est_s": paper_total, "fast_total_s": fast_total,
                     "ratio_total": paper_total / fast_total,
                     "ratio_same_steps": (step20 * 300 + extract_est) / fast_total,
                     "ratio_per_step": step20 / fast_step,
                     "ratio_extract": extract_est / fast["features_seconds"]})
    update("timing", {"command": "python benchmarks/bench_profiles.py " + shlex.join(sys.argv[1:]),
                      "machine": machine(args.threads), "rows": rows, "seconds": round(time.time() - started, 1)})


# ---------------------------------------------------------------------------------------------
# accuracy

def _train(sc, features, seed, epochs, extra, model_path) -> float:
    from bench_diffusion import _job_cli

    args = ["train", "--spectral", sc.spectral, "--sar", sc.sar, "--groundtruth", sc.groundtruth, "--split", "polygons",
            "--samples-per-class", 50, "--epochs", epochs, "--seed", seed, "--test-cap", 0, "--model", model_path,
            *extra]
    if features:
        args += ["--features", features]
    return float(_job_cli({"args": [str(a) for a in args]})["test_oa"])


def cmd_accuracy(args) -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.work)
    started = time.time()
    feats = {}
    futures = {}
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for variant in ("standard", "hard"):
            sc = scene(work, variant)
            f_fast = work / f"acc_fast_{variant}.tif"
            f_paper = work / f"acc_paper_{variant}.tif"
            if not f_fast.exists():
                futures[pool.submit(cli_measured, ["pretrain", "--spectral", sc.spectral, "--sar", sc.sar, "--profile",
                                                   "fast", "--model", work / f"acc_fast_{variant}.bdgf",
                                                   "--features", f_fast], args.threads)] = ("fast", variant)
            if not f_paper.exists():
                futures[pool.submit(worker, {"kind": "paper_features", "work": str(work), "variant": variant,
                                             "steps": args.paper_steps, "batch": 2, "tile": 32, "out": str(f_paper)},
                                    args.threads)] = ("paper", variant)
            feats[variant] = {"fast": f_fast, "paper": f_paper}
        prep = {}
        for fu in cf.as_completed(futures):
            prep["/".join(futures[fu])] = fu.result()
            print(futures[fu], json.dumps(prep["/".join(futures[fu])]), flush=True)
        runs = []
        jobs = {}
        for variant in ("standard", "hard"):
            sc = scene(work, variant)
            for seed in args.seeds:
                for cfg in ("fast", "paper", "guidance off"):
                    f = None if cfg == "guidance off" else feats[variant][cfg]
                    extra = NO_GUIDE if cfg == "guidance off" else []
                    mp = work / f"acc_bdgf_{variant}_{cfg.replace(' ', '_')}_{seed}.bdgf"
                    key = f"accuracy/{args.epochs}/{variant}/{cfg}/{seed}"
                    jobs[pool.submit(cached, work, key, _train, sc, f, seed, args.epochs, extra, mp)] = (variant, cfg, seed)
        for fu in cf.as_completed(jobs):
            variant, cfg, seed = jobs[fu]
            runs.append({"scene": variant, "features": cfg, "seed": seed, "oa": fu.result()})
            print(json.dumps(runs[-1]), flush=True)
    update("accuracy", {"command": "python benchmarks/bench_profiles.py " + shlex.join(sys.argv[1:]),
                        "machine": machine(args.threads), "epochs": args.epochs, "seeds": args.seeds,
                        "paper_steps": args.paper_steps, "prep": prep, "runs": runs,
                        "seconds": round(time.time() - started, 1)})


def cmd_paper_steps(args) -> None:
    """The 'paper' rows of the accuracy table again, with 'paper' pretrained longer (--paper-steps):
    how far the under-training of the 40-step reference explains the gap to 'fast'."""
    import os

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.work)
    started = time.time()
    n = args.paper_steps
    tag = f"{n}" if args.paper_batch == 2 else f"{n}x{args.paper_batch}"  # batch 2: the files of before
    if args.feature_profile == "fast":  # the control: 'fast' on the same short schedule
        tag = f"fast{n}x{args.paper_batch}"
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        prep = {}
        for variant in args.variants:
            f = work / f"acc_paper{tag}_{variant}.tif"
            if not f.exists() and args.feature_profile == "fast":
                sc = scene(work, variant)
                prep[variant] = cli_measured(["pretrain", "--spectral", sc.spectral, "--sar", sc.sar, "--profile", "fast",
                                              "--steps", n, "--batch-size", args.paper_batch,
                                              "--model", str(f).replace(".tif", ".bdgf"), "--features", f], args.threads)
            elif not f.exists():
                prep[variant] = worker({"kind": "paper_features", "work": str(work), "variant": variant, "steps": n,
                                        "batch": args.paper_batch, "tile": 32, "out": str(f)}, args.threads)
                print(variant, json.dumps(prep[variant]), flush=True)
        jobs = {}
        for variant in args.variants:
            sc = scene(work, variant)
            for seed in args.seeds:
                mp = work / f"acc_bdgf_{variant}_paper{tag}_{seed}.bdgf"
                key = f"accuracy/{args.epochs}/{variant}/paper{tag}/{seed}"
                jobs[pool.submit(cached, work, key, _train, sc, work / f"acc_paper{tag}_{variant}.tif", seed,
                                 args.epochs, [], mp)] = (variant, seed)
        runs = []
        for fu in cf.as_completed(jobs):
            variant, seed = jobs[fu]
            runs.append({"scene": variant, "seed": seed, "oa": fu.result()})
            print(json.dumps(runs[-1]), flush=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    entry = data.get("paper_steps", {})
    entry[tag] = {"command": "python benchmarks/bench_profiles.py " + shlex.join(sys.argv[1:]),
                     "machine": machine(args.threads), "epochs": args.epochs, "prep": prep,
                     "steps": n, "batch": args.paper_batch, "profile": args.feature_profile,
                     "runs": sorted(runs, key=lambda r: (r["scene"], r["seed"])),
                     "seconds": round(time.time() - started, 1)}
    update("paper_steps", entry)


# ---------------------------------------------------------------------------------------------
# Markdown

def render(data: dict) -> None:
    L = ["# 'fast' vs 'paper' diffusion profile (issue 10)", "",
         "Written by `benchmarks/bench_profiles.py` from `docs/bench/profiles.json`; do not edit by hand. "
         "Design and reasons: docs/DIFFUSION.md.", ""]
    s = data.get("sweep")
    if s:
        m = s["machine"]
        L += ["## Timestep and decoder-layer sweep (linear probe)", "",
              f"Command: `{s['command']}` (the two models are cached in the work folder between runs). Machine: "
              f"{m['cpu']}, {m['torch_threads']} torch thread(s), {m['date']}.", "",
              "Fast architecture (PCA 6 + 2 SAR bands, widths 8-16-32), 300 steps, seed 0, one model per scene; "
              "logistic regression on the raw features of one timestep alone (standardised), polygon split, "
              "mean of 3 split seeds. OA over all 7 classes (%); in brackets the mean balanced accuracy of the "
              "two SAR-only pairs (%).", "",
              "| t | " + " | ".join(f"{v}: deepest (32 ch) | {v}: shallow (16 ch) | {v}: both (48 ch)"
                                     for v in s["scenes"]) + " |",
              "|---|" + "---|" * (3 * len(s["scenes"]))]
        for t in s["timesteps"]:
            cells = []
            for v, res in s["scenes"].items():
                for name in ("deepest", "shallow", "both"):
                    r = res["single"][f"{t}/{name}"]
                    pair = np.mean([r[k] for k in r if k.startswith("pair")])
                    cells.append(f"{r['oa']:.1f} ({pair:.1f})")
            L.append(f"| {t} | " + " | ".join(cells) + " |")
        L += ["", "Pairs of timesteps (both layers, 96 channels):", "",
              "| t | " + " | ".join(s["scenes"]) + " |", "|---|" + "---|" * len(s["scenes"])]
        keys = list(next(iter(s["scenes"].values()))["pairs"])
        for k in keys:
            L.append(f"| {k} | " + " | ".join(f"{res['pairs'][k]['oa']:.1f}" for res in s["scenes"].values()) + " |")
        ch_t = next(iter(s["scenes"].values())).get("channels_timesteps")
        L += ["", f"Channel reduction after extraction (t = {ch_t}, both layers): PCA-whitened channels kept:", "",
              "| channels | " + " | ".join(s["scenes"]) + " |", "|---|" + "---|" * len(s["scenes"])]
        for k in next(iter(s["scenes"].values()))["channels"]:
            L.append(f"| {k} | " + " | ".join(f"{res['channels'][k]['oa']:.1f}" for res in s["scenes"].values()) + " |")
        L.append("")
    for key in sorted(k for k in data if k.startswith("variants")):
        v = data[key]
        L += [f"## Variants of the denoiser input and width ({v['steps']} pretraining steps)", "",
              f"Command: `{v['command']}` ({v['seconds'] / 60:.0f} min); hard scene, then features with the "
              "profile's timesteps and a 32-channel projection; probe as above (OA over all classes, and the mean "
              "balanced accuracy of the two SAR-only pairs). Times per step are noisy (shared machine).", "",
              "| variant | seed | denoiser bands | parameters | MFLOP/px train | MFLOP/px features | s/step | feature s (200x200) | probe OA (%) | SAR-only pairs (%) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in v["rows"]:
            pair = np.mean([r[k] for k in r if k.startswith("pair")])
            L.append(f"| {r['name']} | {r.get('seed', 0)} | {r['denoiser_bands']} | {r['parameters']:,} | "
                     f"{r['train_mflop_px']:.2f} | {r['feature_mflop_px']:.2f} | {r['step_s']:.3f} | {r['extract_s']:.1f} | "
                     f"{r['oa']:.1f} | {pair:.1f} |")
        names = list(dict.fromkeys(r["name"] for r in v["rows"]))
        if any(sum(r["name"] == n for r in v["rows"]) > 1 for n in names):
            for n in names:
                rs = [r for r in v["rows"] if r["name"] == n]
                L.append(f"| **{n}: mean** | {len(rs)} seeds | | | | | {np.mean([r['step_s'] for r in rs]):.3f} | | "
                         f"**{np.mean([r['oa'] for r in rs]):.1f}** | "
                         f"**{np.mean([np.mean([r[k] for k in r if k.startswith('pair')]) for r in rs]):.1f}** |")
        if key == "variants":
            L.append("\n(In this first run 'band binning' averaged the raw bands before scaling; later runs use "
                     "the profile's `spectral_reduction=\"bins\"`, which averages the scaled bands.)")
        L.append("")
    t = data.get("timing")
    if t:
        m = t["machine"]
        L += ["## Time and peak memory: pretraining + feature extraction", "",
              f"Command: `{t['command']}` (results of each job are cached in the work folder, so an interrupted "
              f"run resumes). Machine: {m['cpu']}, {m['cores']} cores, "
              f"{m['torch_threads']} torch thread(s), torch {m['torch']}, {m['date']}. Other work shared the "
              "machine; all rows of a scene ran in the same invocation.", "",
              "| scene | profile | pretraining (s) | features (s) | total (s) | peak RSS (MiB) | how |", "|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            f, ps, pe = r["fast"], r["paper_steps"], r["paper_extract"]
            L.append(f"| {r['scene']} | fast | {f['pretrain_seconds']:.1f} | {f['features_seconds']:.1f} | "
                     f"{r['fast_total_s']:.1f} | {f['peak_rss_mib']:.0f} | measured: the whole `pretrain --profile fast` |")
            L.append(f"| {r['scene']} | paper | {r['paper_step_batch20_s'] * 30000:,.0f} (est.) | "
                     f"{r['paper_extract_est_s']:,.0f} (est.) | {r['paper_total_est_s']:,.0f} (est.) | "
                     f"{ps['peak_rss_mib']:.0f} (batch 2) / {pe['peak_rss_mib']:.0f} (extraction) | "
                     f"measured {len(ps['step_seconds']) - 1} steps at batch 2: {ps['step_s']:.2f} s/step, x10 for "
                     f"batch 20, x30000 steps; extraction: one 64x64 tile + halo, {pe['seconds']:.0f} s, scaled to "
                     f"the tiling + projection fit |")
        L += ["", "| scene | total paper / fast | same 300 steps: paper / fast | per step (paper batch 20 / fast batch 8) | extraction paper / fast |",
              "|---|---|---|---|---|"]
        for r in t["rows"]:
            L.append(f"| {r['scene']} | {r['ratio_total']:,.0f}x | {r['ratio_same_steps']:,.0f}x | "
                     f"{r['ratio_per_step']:,.0f}x | {r['ratio_extract']:,.0f}x |")
        L += ["", "Denoiser cost per pixel (from `torch.utils.flop_counter`, in the model file's `cost`):", "",
              "| scene | profile | denoiser bands | parameters | MFLOP per training pixel | MFLOP per feature pixel (all timesteps) |",
              "|---|---|---|---|---|---|"]
        for r in t["rows"]:
            c = r["paper_extract"]["cost"]
            f = r["fast"]
            L.append(f"| {r['scene']} | fast | 8 | {f['parameters']:,} | {f['train_mflop_per_pixel']:.2f} | {f['feature_mflop_per_pixel']:.2f} |")
            L.append(f"| {r['scene']} | paper | {c['denoiser_bands']} | {c['parameters']:,} | "
                     f"{c['train_flops_per_pixel'] / 1e6:.1f} | {c['feature_flops_per_pixel'] / 1e6:.1f} |")
        L.append("")
    a = data.get("accuracy")
    if a:
        L += ["## Downstream accuracy: BDGF with 'fast' vs 'paper' features", "",
              f"Command: `{a['command']}` (each run is cached in the work folder; an interrupted run resumes). "
              f"`train`, polygon split, 50 training pixels "
              f"per class, {a['epochs']} epochs, seeds {a['seeds']} (the seed draws the split and initialises the "
              f"network). 'paper' features: paper architecture, timesteps and 64 PCA-whitened channels, pretrained "
              f"only {a['paper_steps']} steps of batch 2 (32x32 tiles) — not the paper's 30000 x 20: a CPU cannot; "
              "see docs/DIFFUSION.md.", "",
              "| scene | features | OA per seed (%) | mean OA (%) | fast - paper (pp) |", "|---|---|---|---|---|"]
        for scene_ in ("standard", "hard"):
            means = {}
            for cfg in ("fast", "paper", "guidance off"):
                rs = sorted((r for r in a["runs"] if r["scene"] == scene_ and r["features"] == cfg), key=lambda r: r["seed"])
                if not rs:
                    continue
                means[cfg] = float(np.mean([r["oa"] for r in rs]))
                diff = f"{means['fast'] - means['paper']:+.2f}" if cfg == "paper" and "fast" in means else ""
                per_seed = ", ".join(f"{r['oa']:.2f}" for r in rs)
                L.append(f"| {scene_} | {cfg} | {per_seed} | {means[cfg]:.2f} | {diff} |")
        L.append("")
    ps = data.get("paper_steps")
    if ps and a:
        L += ["### 'paper' pretrained longer", "",
              "The same downstream runs with the 'paper' features of a longer pretraining (32x32 tiles), beside the "
              "rows above, and 'fast' pretrained on the same short schedule as a control (the same training data for "
              "both architectures). Still far from the paper's 30000 steps of 20 tiles of 64x64.", "",
              "| scene | features | OA per seed (%) | mean OA (%) | fast - this (pp) | command |", "|---|---|---|---|---|---|"]
        def steps_batch(k: str, e: dict) -> tuple[int, int]:  # entries before --paper-batch: key = steps, batch 2
            return (e["steps"], e["batch"]) if "steps" in e else (int(k), 2)

        for k, e in sorted(ps.items(), key=lambda kv: steps_batch(*kv)[::-1]):
            n = "{}, {} steps of batch {}".format(e.get("profile", "paper"), *steps_batch(k, e))
            for scene_ in sorted({r["scene"] for r in e["runs"]}):
                rs = [r for r in e["runs"] if r["scene"] == scene_]
                seeds = {r["seed"] for r in rs}
                fast = [r["oa"] for r in a["runs"] if r["scene"] == scene_ and r["features"] == "fast"
                        and r["seed"] in seeds]
                m = float(np.mean([r["oa"] for r in rs]))
                diff = f"{float(np.mean(fast)) - m:+.2f}" if len(fast) == len(rs) else ""
                per_seed = ", ".join(f"{r['oa']:.2f}" for r in rs)
                L.append(f"| {scene_} | {n} | {per_seed} | {m:.2f} | {diff} | `{e['command']}` |")
        L.append("")
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "profiles.md").write_text("\n".join(L).rstrip() + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["sweep", "variants", "timing", "accuracy", "paper-steps", "render"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/bdgf_bench")
    ap.add_argument("--steps", type=int, default=100, help="variants: pretraining steps")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="accuracy: runs in parallel")
    ap.add_argument("--paper-steps", type=int, default=PAPER_STEPS)
    ap.add_argument("--paper-batch", type=int, default=2, help="paper-steps: tiles per step")
    ap.add_argument("--feature-profile", default="paper", choices=["paper", "fast"],
                    help="paper-steps: whose features (fast: the control on the same schedule)")
    ap.add_argument("--fresh", action="store_true", help="timing: measure again instead of reusing cached runs")
    ap.add_argument("--only", nargs="+", default=None, help="variants: names containing these words")
    ap.add_argument("--variants", nargs="+", default=["standard", "hard"], choices=["standard", "hard"],
                    help="paper-steps: the scenes")
    args = ap.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.part == "render":
        render(json.loads(RESULTS.read_text()))
        return
    {"sweep": cmd_sweep, "variants": cmd_variants, "timing": cmd_timing, "accuracy": cmd_accuracy,
     "paper-steps": cmd_paper_steps}[args.part](args)


if __name__ == "__main__":
    main()
