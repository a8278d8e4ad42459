"""What evaluation costs in a BDGF training run on the demo scene, with and without the test cap (issue 16).

The run is `make demo`'s own training (200 x 200 scene, 60 bands, seed 0; the fast DDPM profile,
300 steps; polygons split, 50 pixels per class, validation share 0.1, 30 epochs), through the
command line. Each repeat trains once per test cap, interleaved, so that both see the same load;
the time split (training, validation, test) is the run's own (its JSON report's history).

The estimates of the capped test are then checked against the whole test set: the cap-0 run's
model classifies the scene, its held-out pixels are read off the map, and the test sample is drawn
with many seeds; the table gives how far the estimates fall from the exact figures and how often
the 95 % intervals hold them.

    OMP_NUM_THREADS=2 python benchmarks/bench_evaluation.py --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench_common import ROOT, cli, cpu_model

DOCS = ROOT / "docs" / "bench"


def scene(work: Path, *extra) -> dict:
    """make demo's scene (or, with ``extra``, another generated scene) and its diffusion features, reused
    when present."""
    s = work / "scene"
    if not (s / "groundtruth.gpkg").exists():
        cli("generate-scene", "--out-dir", s, "--size", 200, "--bands", 60, "--seed", 0, *extra)
    f = work / "diffusion_features.tif"
    if not f.exists():
        cli("pretrain", "--spectral", s / "spectral.tif", "--sar", s / "sar.tif", "--profile", "fast", "--steps", 300,
            "--seed", 0, "--model", work / "diffusion.bdgf", "--features", f)
    return {"spectral": s / "spectral.tif", "sar": s / "sar.tif", "groundtruth": s / "groundtruth.gpkg",
            "features": f}


def train(work: Path, sc: dict, cap: int, epochs: int, tag: str) -> dict:
    model = work / f"bdgf_cap{cap}_{tag}.bdgf"
    t0 = time.perf_counter()
    cli("train", "--spectral", sc["spectral"], "--sar", sc["sar"], "--features", sc["features"],
        "--groundtruth", sc["groundtruth"], "--class-field", "class", "--samples-per-class", 50, "--split", "polygons",
        "--epochs", epochs, "--seed", 0, "--test-cap", cap, "--model", model, "--report", model.with_suffix(".html"))
    wall = time.perf_counter() - t0
    rep = json.loads(model.with_suffix(".json").read_text())
    h, acc = rep["history"], rep["test_accuracy"]
    fit, val, test = h["seconds"], h["val_seconds"], h["test_seconds"]
    return {"cap": cap, "wall": wall, "train": fit - val, "val": val, "test": test,
            "share": 100 * (val + test) / (fit + test), "tested": (acc.get("sample") or acc)["n"],
            "test_pixels": rep["split"]["test"],
            "oa": acc["oa"], "aa": acc["aa"], "oa_ci95": (acc.get("sample") or {}).get("oa_ci95"),
            "aa_ci95": (acc.get("sample") or {}).get("aa_ci95"), "model": str(model)}


def resample(work: Path, sc: dict, run0: dict, cap: int, draws: int, name: str) -> dict:
    """The capped estimates against the whole test set, over ``draws`` sample seeds, on the cap-0 model's map."""
    from osgeo import gdal

    from bdgf_core.metrics import assess
    from bdgf_core.modelfile import load_model
    from bdgf_core.testsample import assess_sample, draw_test_sample

    out = work / "map_cap0.tif"
    if not out.exists():
        cli("classify", "--model", run0["model"], "--spectral", sc["spectral"], "--sar", sc["sar"],
            "--features", sc["features"], "--out", out)
    tensors, meta = load_model(run0["model"], "bdgf")
    test = np.asarray(tensors["split.test"], np.int64)
    codes = [c["code"] for c in meta["classes"]]
    predicted = gdal.Open(str(out)).ReadAsArray().ravel()[test]
    # the held-out polygons lie inside their classes, so the scene's reference map gives their labels
    reference = gdal.Open(str(Path(sc["groundtruth"]).with_name("reference.tif"))).ReadAsArray().ravel()[test]
    exact = assess(reference, predicted, codes)
    if abs(exact.oa - run0["oa"]) > 0.01:
        raise SystemExit(f"the map's test OA {exact.oa:.4f} is not the run's {run0['oa']:.4f}: labels or map differ")
    err_oa, err_aa, cover_oa, cover_aa, half = [], [], 0, 0, []
    cover_pa, cover_ua = np.zeros(len(codes)), np.zeros(len(codes))
    for seed in range(draws):
        i = draw_test_sample(reference, cap, seed)
        est = assess_sample(reference[i], predicted[i], codes, reference)
        k = len(codes)
        cover_pa += np.abs(np.array(est.producers[:k]) - exact.producers[:k]) <= est.sample["producers_ci95"][:k]
        ua_half = np.array([np.inf if h is None else h for h in est.sample["users_ci95"][:k]])
        cover_ua += np.abs(np.nan_to_num(np.array(est.users[:k]) - exact.users[:k])) <= ua_half
        err_oa.append(est.oa - exact.oa)
        err_aa.append(est.aa - exact.aa)
        cover_oa += abs(est.oa - exact.oa) <= est.sample["oa_ci95"]
        cover_aa += abs(est.aa - exact.aa) <= est.sample["aa_ci95"]
        half.append(est.sample["oa_ci95"])
    return {"scene": name, "cap": cap, "draws": draws, "exact_oa": exact.oa, "exact_aa": exact.aa, "test_pixels": int(test.size),
            "mean_err_oa": float(np.mean(err_oa)), "sd_oa": float(np.std(err_oa)),
            "max_abs_err_oa": float(np.max(np.abs(err_oa))), "mean_err_aa": float(np.mean(err_aa)),
            "max_abs_err_aa": float(np.max(np.abs(err_aa))), "mean_half_oa": float(np.mean(half)),
            "cover_oa": cover_oa / draws, "cover_aa": cover_aa / draws,
            "cover_pa_worst": float(cover_pa.min() / draws), "cover_ua_worst": float(cover_ua.min() / draws)}


def batch_rates(work: Path, sc: dict, run0: dict, batches: list[int], repeats: int, pixels: int = 2000) -> dict:
    """Pixels per second of the held-out test's prediction (predict_pixels) at each batch size: the
    cap-0 model, ``pixels`` of its test pixels drawn at random, repeats interleaved."""
    from bdgf_core.modelfile import load_model
    from bdgf_core.models import load_predictor
    from bdgf_core.normalise import apply
    from bdgf_core.raster import RasterSource
    from bdgf_core.training import predict_pixels

    pred, _ = load_predictor(run0["model"])
    tensors, _ = load_model(run0["model"], "bdgf")
    spec = np.nan_to_num(apply(RasterSource(str(sc["spectral"])).read(), tensors["spectral_mean"],
                               tensors["spectral_std"])).astype(np.float32)
    sar = np.nan_to_num(apply(RasterSource(str(sc["sar"])).read(), tensors["sar_mean"],
                              tensors["sar_std"])).astype(np.float32)
    feat = np.nan_to_num(RasterSource(str(sc["features"])).read()).astype(np.float32)
    pick = np.random.default_rng(0).choice(np.asarray(tensors["split.test"], np.int64), pixels, replace=False)
    rates: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(repeats):
        for b in batches:
            t0 = time.perf_counter()
            predict_pixels(pred.net, spec, sar, feat, pick, pred.patch, batch_size=b)
            rates[b].append(pixels / (time.perf_counter() - t0))
    return {str(b): sorted(v) for b, v in rates.items()}


def render(runs: list[dict], checks: list[dict], command: str, hard_epochs: int, batches: dict) -> str:
    lines = ["# Evaluation in a training run: the test cap (issue 16)", "",
             f"Command: `{command}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}; "
             f"{time.strftime('%Y-%m-%d')}. `make demo`'s training run (200 x 200 scene, seed 0, 30 epochs, polygons "
             "split, 50 pixels per class, validation share 0.1, 200 validation pixels per epoch); the time split is "
             "the run's own; repeats interleaved.", "",
             "| test cap | repeat | test pixels predicted | training s | validation s | test s | evaluation share "
             "| run wall s | test OA % | test AA % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ci = lambda v, h: f"{v:.2f}" + (f" ± {h:.2f}" if h is not None else "")  # noqa: E731
        lines.append(f"| {r['cap'] or 'none (0)'} | {r['repeat']} | {r['tested']} of {r['test_pixels']} | "
                     f"{r['train']:.1f} | {r['val']:.1f} | {r['test']:.1f} | **{r['share']:.1f} %** | {r['wall']:.1f} | "
                     f"{ci(r['oa'], r['oa_ci95'])} | {ci(r['aa'], r['aa_ci95'])} |")
    caps = sorted({r["cap"] for r in runs}, key=lambda c: c or float("inf"))
    med = {c: (float(np.median([r["share"] for r in runs if r["cap"] == c])),
               float(np.median([r["wall"] for r in runs if r["cap"] == c]))) for c in caps}
    lines += ["", "Medians: " + "; ".join(f"test cap {c or 'none'}: evaluation **{med[c][0]:.1f} %** of the run, "
                                          f"run {med[c][1]:.1f} s" for c in caps) + ".",
              "", "Evaluation share: (validation + test) / (training + validation + test). ± is the report's 95 % "
              "interval.", "", "## The capped estimates against the whole test set", "",
              "A cap-0 model's map, its held-out pixels; the test sample drawn with seeds 0 to draws - 1. The demo "
              "scene's model makes next to no error there, so the hard scene (`generate-scene --variant hard`, "
              f"200 x 200, seed 0; the same training, {hard_epochs} epochs) checks the estimates where there are errors to "
              "estimate.", "",
              "| scene | cap | draws | test pixels | exact OA % | mean error (pp) | sd (pp) | largest error (pp) | "
              "mean 95 % half-width (pp) | intervals holding OA | exact AA % | largest AA error (pp) | "
              "intervals holding AA | producer's intervals holding (worst class) | user's (worst class) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['scene']} | {c['cap']} | {c['draws']} | {c['test_pixels']} | {c['exact_oa']:.2f} | {c['mean_err_oa']:+.3f} | "
                     f"{c['sd_oa']:.3f} | {c['max_abs_err_oa']:.3f} | {c['mean_half_oa']:.3f} | "
                     f"{100 * c['cover_oa']:.0f} % | {c['exact_aa']:.2f} | {c['max_abs_err_aa']:.3f} | "
                     f"{100 * c['cover_aa']:.0f} % | {100 * c['cover_pa_worst']:.0f} % | {100 * c['cover_ua_worst']:.0f} % |")
    if batches:
        lines += ["", "## The test's batch size", "",
                  "predict_pixels on 2000 of the cap-0 model's test pixels (drawn at random), wall pixels/s, "
                  "min / median / max of interleaved repeats; the default is 256 on the CPU (it was 1024).", "",
                  "| batch | pixels/s |", "|---|---|"]
        lines += [f"| {b} | {v[0]:.0f} / {float(np.median(v)):.0f} / {v[-1]:.0f} |" for b, v in batches.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default="2000,0", help="test caps to compare, 0 = every test pixel")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--draws", type=int, default=500, help="sample seeds for the estimates' check")
    ap.add_argument("--batches", default="64,256,1024", help="batch sizes of the test's prediction to time ('': none)")
    ap.add_argument("--batch-repeats", type=int, default=3)
    ap.add_argument("--hard-epochs", type=int, default=10, help="the hard scene's model for the check (0: none)")
    ap.add_argument("--work", default=str(ROOT / "build" / "bench_evaluation"))
    ap.add_argument("--out", default=str(DOCS / "evaluation.md"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sc = scene(work)
    caps = [int(c) for c in args.caps.split(",")]
    cache = work / "runs.json"  # finished runs: an interrupted benchmark resumes
    done = json.loads(cache.read_text()) if cache.exists() else {}
    runs = []
    for k in range(args.repeats):
        for cap in caps:
            key = f"{cap}/{args.epochs}/{k}"
            if key not in done:
                done[key] = train(work, sc, cap, args.epochs, str(k))
                done[key]["repeat"] = k + 1
                cache.write_text(json.dumps(done, indent=1) + "\n")
            runs.append(done[key])
            print(json.dumps(done[key]), flush=True)
    run0 = next((r for r in runs if r["cap"] == 0), None)
    checks = [] if run0 is None else [resample(work, sc, run0, c, args.draws, "demo") for c in caps if c]
    if args.hard_epochs:
        hard_work = work / "hard"
        hard_work.mkdir(exist_ok=True)
        hard = scene(hard_work, "--variant", "hard")
        key = f"hard/0/{args.hard_epochs}"
        if key not in done:
            done[key] = train(hard_work, hard, 0, args.hard_epochs, "hard")
            cache.write_text(json.dumps(done, indent=1) + "\n")
        checks += [resample(hard_work, hard, done[key], c, args.draws, "hard") for c in caps if c]
    for c in checks:
        print(json.dumps(c), flush=True)
    batches = {}
    if run0 is not None and args.batches:
        key = f"batches/{args.batches}/{args.batch_repeats}"
        if key not in done:
            done[key] = batch_rates(work, sc, run0, [int(b) for b in args.batches.split(",")], args.batch_repeats)
            cache.write_text(json.dumps(done, indent=1) + "\n")
        batches = done[key]
    print(json.dumps({"batches": batches}), flush=True)
    command = "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "2") + " python benchmarks/bench_evaluation.py " + \
        " ".join(f"--{k} {v}" for k, v in (("caps", args.caps), ("repeats", args.repeats), ("epochs", args.epochs),
                                          ("draws", args.draws),
                                          ("hard-epochs", args.hard_epochs), ("batches", args.batches)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(runs, checks, command, args.hard_epochs, batches))
    (Path(args.out).with_suffix(".json")).write_text(json.dumps({"runs": runs, "checks": checks, "batches": batches},
                                                                indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
