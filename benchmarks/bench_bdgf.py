"""Accuracy benchmark of Train BDGF (issue 4): Table II-style ablations over seeds.

    python benchmarks/bench_bdgf.py [--epochs 30] [--seeds 0 1 2 3 4] [--part scene houston]

Embedded scene (``generate-scene`` defaults, 200x200, 60 + 2 bands): diffusion features from
``pretrain --profile fast`` with and without modality masking (computed once, cached), then
``train`` through the command line for each configuration and seed (the seed draws the polygon
split and initialises the network), and the random-forest baseline on the same splits. The
accuracy is the one ``train`` measures on the held-out test pixels.

Houston2013 (real HSI + LiDAR pixels in ../shared/data, no image cube): 1x1 patches, 50
training pixels per class drawn per seed, the rest for testing, through the Python API. The
DDPM denoises spatial tiles and these are isolated pixels, so the diffusion-guided rows are not
run there; the branches run without guidance.

Writes docs/bench/bdgf.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from bench_common import cli, cpu_model  # noqa: E402

NO_GUIDE = ["--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba"]
SCENE_CONFIGS = {  # name -> (extra train args, which features)
    "BDGF (full)": ([], "masked"),
    "CNN branch only": (["--no-transformer", "--no-mamba"], "masked"),
    "Transformer branch only": (["--no-cnn", "--no-mamba"], "masked"),
    "Mamba branch only": (["--no-cnn", "--no-transformer"], "masked"),
    "mutual learning off": (["--no-mutual"], "masked"),
    "mask off (Concatenate Diff features)": ([], "plain"),
    "diffusion guidance off": (NO_GUIDE, None),
}


def summary(rows: list[dict]) -> str:
    a = np.array([[r["oa"], r["aa"], r["kappa"]] for r in rows])
    m, s = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(3)
    return " | ".join(f"{m[i]:.2f} ± {s[i]:.2f}" for i in range(3))


def scene_part(work: Path, seeds: list[int], epochs: int, samples: int, steps: int | None,
               on_seed=None, variant: str = "standard") -> dict[str, list[dict]]:
    from bench_profiles import cached

    work = work / variant
    work.mkdir(parents=True, exist_ok=True)
    scene = work / "scene"
    if not (scene / "groundtruth.gpkg").exists():
        cli("generate-scene", "--out-dir", scene, "--variant", variant)
    s, a, g = scene / "spectral.tif", scene / "sar.tif", scene / "groundtruth.gpkg"
    feats = {}
    for name, extra in (("masked", []), ("plain", ["--no-masking"])):
        f = work / f"features_{name}.tif"
        if not f.exists():
            t0 = time.perf_counter()
            cli("pretrain", "--spectral", s, "--sar", a, "--profile", "fast", *extra,
                *(["--steps", steps] if steps else []), "--model", work / f"ddpm_{name}.bdgf", "--features", f)
            print(f"pretrain {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        feats[name] = f
    pix = ["BDGF (full) — pixels split (the paper's protocol)", "random forest — pixels split"]
    results: dict[str, list[dict]] = {k: [] for k in [*SCENE_CONFIGS, "random forest (baseline)", *pix]}
    common = ["--spectral", s, "--sar", a, "--groundtruth", g, "--samples-per-class", samples, "--split", "polygons"]
    for seed in seeds:
        for name, (extra, fk) in SCENE_CONFIGS.items():
            def run(extra=extra, fk=fk) -> dict:
                fa = ["--features", feats[fk]] if fk else []
                cli("train", *common, *fa, *extra, "--epochs", epochs, "--seed", seed, "--device", "cpu",
                    "--test-cap", 0, "--model", work / "m.bdgf", "--report", work / "m.html")
                acc = json.loads((work / "m.json").read_text())["test_accuracy"]
                return {k: acc[k] for k in ("oa", "aa", "kappa")}

            t0 = time.perf_counter()  # each run is cached: an interrupted benchmark resumes
            results[name].append(cached(work, f"{name}/{epochs}/{samples}/{seed}", run))
            print(f"seed {seed} {name}: OA {results[name][-1]['oa']:.2f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)

        def forest() -> dict:
            cli("train-baseline", *common, "--seed", seed, "--model", work / "rf.bdgf", "--report", work / "rf.html")
            acc = json.loads((work / "rf.json").read_text())["test_accuracy"]
            return {k: acc[k] for k in ("oa", "aa", "kappa")}

        results["random forest (baseline)"].append(cached(work, f"rf/{samples}/{seed}", forest))
        print(f"seed {seed} random forest: OA {results['random forest (baseline)'][-1]['oa']:.2f}", flush=True)
        # issue 8: the same full model and forest under the paper's random pixel split
        px = [*common[:-1], "pixels"]

        def bdgf_pixels() -> dict:
            cli("train", *px, "--features", feats["masked"], "--epochs", epochs, "--seed", seed, "--device", "cpu",
                "--test-cap", 0, "--model", work / "mp.bdgf", "--report", work / "mp.html")
            acc = json.loads((work / "mp.json").read_text())["test_accuracy"]
            return {k: acc[k] for k in ("oa", "aa", "kappa")}

        def forest_pixels() -> dict:
            cli("train-baseline", *px, "--seed", seed, "--model", work / "rfp.bdgf", "--report", work / "rfp.html")
            acc = json.loads((work / "rfp.json").read_text())["test_accuracy"]
            return {k: acc[k] for k in ("oa", "aa", "kappa")}

        for name, fn in zip(pix, (bdgf_pixels, forest_pixels)):
            results[name].append(cached(work, f"pixels/{name}/{epochs}/{samples}/{seed}", fn))
            print(f"seed {seed} {name}: OA {results[name][-1]['oa']:.2f}", flush=True)
        if on_seed is not None:  # a long run leaves its finished seeds on disk
            on_seed(results)
    return results


def houston_part(seeds: list[int], epochs: int, samples: int) -> dict[str, list[dict]]:
    from scipy.io import loadmat

    from bdgf_core.baseline import fit_forest, forest_proba
    from bdgf_core.metrics import assess
    from bdgf_core.network.bdgf import BDGFConfig
    from bdgf_core.training import fit_bdgf, predict_pixels

    d = SHARED / "houston2013"
    hsi = loadmat(d / "HSI_TrSet.mat")["HSI_TrSet"].astype(np.float32)
    lidar = loadmat(d / "LiDAR_TrSet.mat")["LiDAR_TrSet"].astype(np.float32)
    y = loadmat(d / "TrLabel.mat")["TrLabel"].ravel().astype(np.int64)
    codes = sorted(np.unique(y).tolist())
    configs = {
        "BDGF, no guidance (all branches, mutual learning)": {},
        "CNN branch only": dict(use_transformer=False, use_mamba=False),
        "Transformer branch only": dict(use_cnn=False, use_mamba=False),
        "Mamba branch only": dict(use_cnn=False, use_transformer=False),
        "mutual learning off": dict(mutual=False),
    }
    results: dict[str, list[dict]] = {k: [] for k in [*configs, "random forest (baseline)"]}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), samples, replace=False) for c in codes])
        test = np.setdiff1d(np.arange(len(y)), train)
        # normalisation from the training pixels only
        def norm(x):
            m, s = x[train].mean(0), x[train].std(0) + 1e-6
            return ((x - m) / s).T[:, None, :].astype(np.float32)  # (bands, 1, N): one row of pixels
        spec, sar = norm(hsi), norm(lidar)
        idx = {c: i for i, c in enumerate(codes)}
        lab = np.array([idx[int(v)] for v in y])
        px = (np.zeros(len(train), np.int64), train, lab[train])
        for name, over in configs.items():
            cfg = BDGFConfig(patch=1, epochs=epochs, seed=seed, guide_cnn=False, guide_transformer=False,
                             guide_mamba=False, **over)
            t0 = time.perf_counter()
            net, _ = fit_bdgf(spec, sar, None, px, None, len(codes), cfg, "cpu")
            pred = predict_pixels(net, spec, sar, None, test, 1).argmax(1)
            acc = assess(y[test], np.asarray(codes)[pred], codes)
            results[name].append({"oa": acc.oa, "aa": acc.aa, "kappa": acc.kappa})
            print(f"houston seed {seed} {name}: OA {acc.oa:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        x = np.concatenate([hsi, lidar], 1)
        m, s = x[train].mean(0), x[train].std(0) + 1e-6
        forest = fit_forest((x[train] - m) / s, y[train], trees=200, seed=seed)
        pred = np.asarray(codes)[forest_proba(forest, (x[test] - m) / s).argmax(1)]
        acc = assess(y[test], pred, codes)
        results["random forest (baseline)"].append({"oa": acc.oa, "aa": acc.aa, "kappa": acc.kappa})
        print(f"houston seed {seed} random forest: OA {acc.oa:.2f}", flush=True)
    return results


def houston_splits_part(work: Path, seeds: list[int], epochs: int, samples: int,
                        strategies: tuple[str, ...] = ("pixels", "polygons")) -> dict[str, list[dict]]:
    """Issue 8: BDGF (no guidance) and the random forest on Houston2013 under the paper's random pixel
    split and under the polygon split (whole connected regions of the TR raster held out)."""
    from bench_profiles import cached
    from bench_splits import load_houston

    from bdgf_core.baseline import fit_forest, forest_proba
    from bdgf_core.metrics import assess
    from bdgf_core.network.bdgf import BDGFConfig
    from bdgf_core.sampling import split_samples
    from bdgf_core.training import fit_bdgf, predict_pixels

    hsi, lidar, gt, row_of = load_houston()
    labels = gt.labels.ravel()
    codes = [c.code for c in gt.classes]
    idx = {c: i for i, c in enumerate(codes)}
    results: dict[str, list[dict]] = {}
    for strategy in strategies:
        for seed in seeds:
            sp = split_samples(gt, samples, strategy, seed)
            tr, te = row_of[sp.train], row_of[sp.test]
            y = labels[sp.train], labels[sp.test]
            m1, s1, m2, s2 = hsi[tr].mean(0), hsi[tr].std(0) + 1e-6, lidar[tr].mean(0), lidar[tr].std(0) + 1e-6

            def bdgf(tr=tr, te=te, y=y, seed=seed) -> dict:
                rows = np.concatenate([tr, te])  # one row of pixels: training first, then the test pixels
                spec = ((hsi[rows] - m1) / s1).T[:, None, :].astype(np.float32)
                sar = ((lidar[rows] - m2) / s2).T[:, None, :].astype(np.float32)
                px = (np.zeros(tr.size, np.int64), np.arange(tr.size), np.array([idx[int(v)] for v in y[0]]))
                cfg = BDGFConfig(patch=1, epochs=epochs, seed=seed, guide_cnn=False, guide_transformer=False,
                                 guide_mamba=False)
                net, _ = fit_bdgf(spec, sar, None, px, None, len(codes), cfg, "cpu")
                pred = predict_pixels(net, spec, sar, None, np.arange(tr.size, rows.size), 1).argmax(1)
                a = assess(y[1], np.asarray(codes)[pred], codes)
                return {"oa": a.oa, "aa": a.aa, "kappa": a.kappa, "train": int(tr.size), "test": int(te.size)}

            def forest(tr=tr, te=te, y=y, seed=seed) -> dict:
                x = np.concatenate([hsi, lidar], 1)
                m, s = x[tr].mean(0), x[tr].std(0) + 1e-6
                f = fit_forest((x[tr] - m) / s, y[0], trees=200, seed=seed)
                a = assess(y[1], np.asarray(codes)[forest_proba(f, (x[te] - m) / s).argmax(1)], codes)
                return {"oa": a.oa, "aa": a.aa, "kappa": a.kappa, "train": int(tr.size), "test": int(te.size)}

            def svm(tr=tr, te=te, y=y, seed=seed) -> dict:
                from bench_maps import fit_svm

                x = np.concatenate([hsi, lidar], 1)
                a = assess(y[1], fit_svm(x[tr], y[0], seed).predict(x[te]), codes)
                return {"oa": a.oa, "aa": a.aa, "kappa": a.kappa, "train": int(tr.size), "test": int(te.size)}

            for name, fn in (("BDGF, no guidance", bdgf), ("random forest (baseline)", forest),
                             ("RBF SVM (standardised, C by 3-fold CV)", svm)):
                key = f"{name} — {strategy} split"
                t0 = time.perf_counter()
                r = cached(work, f"houston-splits/{key}/{epochs}/{samples}/{seed}/{sp.fingerprint}", fn)
                results.setdefault(key, []).append(r)
                print(f"houston {key} seed {seed}: OA {r['oa']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return results


def gaps(results: dict[str, list[dict]]) -> str:
    """How much the paper's pixel split overstates OA, per model (rows named '<model> — <split> split')."""
    lines = []
    for name in dict.fromkeys(k.split(" — ")[0] for k in results):
        px, pg = results.get(f"{name} — pixels split"), results.get(f"{name} — polygons split")
        if px and pg:
            a, b = np.mean([r["oa"] for r in px]), np.mean([r["oa"] for r in pg])
            lines.append(f"- {name}: {a:.1f} % OA with the pixel split, {b:.1f} % with whole regions held out: the "
                         f"paper's protocol overstates OA by {a - b:.1f} points.")
    return "\n".join(lines)


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| configuration | OA % | AA % | Kappa % |", "|---|---|---|---|"]
    lines += [f"| {k} | {summary(v).replace(' | ', ' | ')} |" for k, v in results.items() if v]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--pretrain-steps", type=int, default=None, help="default: the fast profile's")
    ap.add_argument("--part", nargs="+", default=["scene", "houston"], choices=["scene", "houston", "houston-splits"])
    ap.add_argument("--splits", nargs="+", default=["pixels", "polygons"], choices=["pixels", "polygons"],
                    help="the splits of --part houston-splits")
    ap.add_argument("--variant", nargs="+", default=["standard"], choices=["standard", "hard"],
                    help="scene variant(s) of generate-scene for --part scene")
    ap.add_argument("--work", default=str(ROOT / "build" / "bench_bdgf"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "bdgf.md"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    t0 = time.perf_counter()
    sections = []

    for variant in (args.variant if "scene" in args.part else []):
        def partial(r, variant=variant):
            n = len(r["random forest (baseline)"])
            write(args, t0, sections + [f"## Embedded scene, {variant}: {n} of {len(args.seeds)} seeds done so far"
                                        "\n\n" + table(r)])

        r = scene_part(work, args.seeds, args.epochs, args.samples, args.pretrain_steps, partial, variant)
        sections.append(f"## Embedded scene, `--variant {variant}` (200x200, 60 spectral + 2 SAR bands, polygon split)"
                        f"\n\nDiffusion features: `pretrain --profile fast` (masking on; `--no-masking` for the mask-off "
                        f"row). {args.epochs} epochs, {args.samples} training pixels per class, patch 9, CPU. The last "
                        "two rows use the paper's random pixel split instead (issue 8): compare them with the first "
                        "row and the forest row.\n\n" + table(r))
        (work / f"scene_{variant}.json").write_text(json.dumps(r))
    if "houston-splits" in args.part and (SHARED / "houston2013").exists():
        r = houston_splits_part(work, args.seeds, args.epochs, args.samples, tuple(args.splits))
        sections.append("## Houston2013: the paper's pixel split vs the polygon split (issue 8)\n\n"
                        f"Real HSI (144 bands) + LiDAR (21) training pixels, 1x1 patches, {args.samples} training pixels "
                        "per class from the training side of `split_samples` (bdgf_core/sampling.py): `pixels` draws "
                        "test pixels at random among all labelled pixels, `polygons` holds out whole 8-connected regions "
                        f"of the TR label raster. {args.epochs} epochs, no diffusion guidance (isolated pixels).\n\n"
                        + table(r) + "\n\n" + gaps(r))
        (work / "houston_splits.json").write_text(json.dumps(r))
    if "houston" in args.part:
        if not (SHARED / "houston2013").exists():
            sections.append("## Houston2013\n\nnot run: ../shared/data/houston2013 is absent")
        else:
            r = houston_part(args.seeds, args.epochs, args.samples)
            sections.append("## Houston2013 (real HSI 144 bands + LiDAR 21 features, 2832 labelled pixels)\n\n"
                            f"1x1 patches, {args.samples} training pixels per class (random per seed), the other "
                            f"pixels for testing, {args.epochs} epochs, no diffusion guidance (isolated pixels: the "
                            "DDPM has no tiles to denoise).\n\n" + table(r))
            (work / "houston.json").write_text(json.dumps(r))
    write(args, t0, sections)


def write(args, t0: float, sections: list[str]) -> None:
    import torch

    cpu = cpu_model()
    head = ("# BDGF accuracy benchmark (issue 4)\n\n"
            f"Command: `python benchmarks/bench_bdgf.py --epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))} "
            f"--part {' '.join(args.part)}"
            + (f" --variant {' '.join(args.variant)}" if "scene" in args.part else "") + "`\n\n"
            f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
            f"this invocation took {time.perf_counter() - t0:.0f} s (runs already in the work folder's cache are "
            f"reused, so a resumed benchmark takes less). Mean ± standard deviation over {len(args.seeds)} seeds; "
            "accuracy on held-out pixels.\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    Path(args.out).write_text(head + f"Load average at writing: {load:.1f} (a shared machine).\n\n"
                              + "\n\n".join(sections) + "\n")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
