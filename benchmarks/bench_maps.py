"""Whole-map accuracy (issue 15): BDGF and strong simple baselines, scored against the full reference map.

    .venv/bin/python benchmarks/bench_maps.py [--seeds 0 1 2] [--epochs 30] [--variant standard hard]

For each scene variant (``generate-scene``, 200 x 200, 60 spectral + 2 SAR bands) and seed, the
polygon split of ``train`` (50 training pixels per class, validation share 0.1, the dialog's
defaults) gives every model the same training pixels. The models:

- random forest on the per-pixel values (200 trees, as ``train-baseline``);
- random forests on 3 x 3 and 9 x 9 window means of every band (what a careful user can do by
  hand with a focal-mean tool before the forest; ``train-baseline --features mean3 / mean9``);
- an RBF SVM on standardised per-pixel values, C chosen by 3-fold cross-validation on the
  training pixels (1, 10, 100, 1000; gamma 'scale');
- BDGF through the command line (``pretrain --profile fast`` once per variant, ``train`` with
  ``--epochs``, ``classify`` over the whole scene).

Every map is scored by ``bdgf_core.mapscore.score_map`` against the scene's ``reference.tif``
(every pixel's true class), leaving out the training and validation pixels: over all pixels,
boundary pixels (within 2 px, Euclidean, of another class) and interior pixels; and, as the
training reports do, on the held-out test polygons. Writes docs/bench/maps.md; the runs are
cached in the work folder, so an interrupted benchmark resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cli, cpu_model  # noqa: E402

BASELINES = ("random forest, per pixel", "random forest, 3 x 3 means", "random forest, 9 x 9 means",
             "RBF SVM, per pixel (standardised)")
BDGF = "BDGF (fast features)"
VALIDATION_SHARE = 0.1  # train's default: BDGF's training pixels are those of this split
TREES = 200


def fit_svm(x: np.ndarray, y: np.ndarray, seed: int):
    """An RBF SVM on standardised features (N, F), C in 1..1000 chosen by stratified 3-fold CV."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    return GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma="scale")),
                        {"svc__C": [1, 10, 100, 1000]}, cv=cv, n_jobs=1).fit(x, y)


def baseline_maps(spectral: np.ndarray, sar: np.ndarray, y_train: np.ndarray, train: np.ndarray,
                  seed: int) -> dict[str, np.ndarray]:
    """Whole-scene class maps (H, W) of the four baselines, each fitted on the pixels ``train``."""
    from bdgf_core.baseline import fit_forest, forest_proba, window_means

    x = np.concatenate([spectral, sar])                     # (C, H, W), bands normalised
    h, w = x.shape[1:]
    maps = {}
    for name, size in zip(BASELINES[:3], (1, 3, 9)):
        # the features of train-baseline --features pixel / mean3 / mean9 (reflected at the image's edges)
        k = size // 2
        f = window_means(np.pad(x, ((0, 0), (k, k), (k, k)), mode="reflect"), size).reshape(x.shape[0], -1).T
        forest = fit_forest(f[train], y_train, TREES, seed, n_jobs=1)
        maps[name] = forest["classes"][forest_proba(forest, f).argmax(1)].reshape(h, w)
    f = x.reshape(x.shape[0], -1).T
    maps[BASELINES[3]] = fit_svm(f[train], y_train, seed).predict(f).reshape(h, w)
    return maps


def scene_inputs(work: Path, variant: str, size: int, steps: int | None) -> dict:
    """The scene of a variant and its fast diffusion features (made once, then reused)."""
    scene = work / variant / "scene"
    if not (scene / "reference.tif").exists():
        cli("generate-scene", "--out-dir", scene, "--variant", variant, "--size", size)
    feats = work / variant / "features.tif"
    if not feats.exists():
        t0 = time.perf_counter()
        cli("pretrain", "--spectral", scene / "spectral.tif", "--sar", scene / "sar.tif", "--profile", "fast",
            *(["--steps", steps] if steps else []), "--model", work / variant / "ddpm.bdgf", "--features", feats)
        print(f"{variant}: pretrain {time.perf_counter() - t0:.0f} s", flush=True)
    return {"spectral": scene / "spectral.tif", "sar": scene / "sar.tif", "groundtruth": scene / "groundtruth.gpkg",
            "reference": scene / "reference.tif", "features": feats}


def score(maps: dict[str, np.ndarray], reference: np.ndarray, test: np.ndarray, scored: np.ndarray,
          codes: list[int]) -> dict[str, dict]:
    """Per model: the held-out polygons' OA and the whole-map scores (all / boundary / interior)."""
    from bdgf_core.mapscore import score_map
    from bdgf_core.metrics import assess

    out = {}
    for name, m in maps.items():
        s = score_map(reference, m, codes, mask=scored)
        t = assess(reference.ravel()[test], m.ravel()[test], codes)
        out[name] = {"test_oa": t.oa, "map_oa": s.all.oa, "boundary_oa": s.boundary.oa, "interior_oa": s.interior.oa,
                     "errors_on_boundary": s.error_boundary_share * 100 if np.isfinite(s.error_boundary_share) else 0.0,
                     "map_pa": s.all.producers, "boundary_pa": s.boundary.producers,
                     "n_map": int(s.all.confusion.sum()), "n_boundary": int(s.boundary.confusion.sum())}
    return out


def run_seed(work: Path, variant: str, inputs: dict, seed: int, epochs: int, samples: int) -> dict:
    from osgeo import gdal

    from bdgf_core.groundtruth import load_ground_truth
    from bdgf_core.modelfile import load_model
    from bdgf_core.normalise import apply, band_stats
    from bdgf_core.raster import RasterSource
    from bdgf_core.sampling import split_samples

    spec, sar = RasterSource(inputs["spectral"]), RasterSource(inputs["sar"])
    gt = load_ground_truth(inputs["groundtruth"], spec.grid)
    sp = split_samples(gt, samples, "polygons", seed, VALIDATION_SHARE)
    reference = gdal.Open(str(inputs["reference"])).ReadAsArray().astype(np.int64)
    codes = [c.code for c in gt.classes]
    spectral = apply(spec.read(), *band_stats(lambda a, b: spec.read(a, b), spec.height, spec.width, "s", seed))
    sar_n = apply(sar.read(), *band_stats(lambda a, b: sar.read(a, b), sar.height, sar.width, "a", seed))
    t0 = time.perf_counter()
    maps = baseline_maps(spectral, sar_n, gt.labels.ravel()[sp.train], sp.train, seed)
    print(f"{variant} seed {seed}: baselines {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    d = work / variant
    common = ["--spectral", inputs["spectral"], "--sar", inputs["sar"]]
    cli("train", *common, "--groundtruth", inputs["groundtruth"], "--features", inputs["features"],
        "--samples-per-class", samples, "--split", "polygons", "--validation-share", VALIDATION_SHARE,
        "--epochs", epochs, "--seed", seed, "--device", "cpu", "--model", d / "bdgf.bdgf")
    tensors, _ = load_model(d / "bdgf.bdgf")
    # the same split as the baselines': same training, validation and test pixels
    for k, mine in (("train", sp.train), ("val", sp.val), ("test", sp.test)):
        if not np.array_equal(tensors[f"split.{k}"], mine):
            raise SystemExit(f"BDGF's {k} pixels differ from the baselines'; the comparison would be unfair")
    cli("classify", "--model", d / "bdgf.bdgf", *common, "--features", inputs["features"], "--device", "cpu",
        "--out", d / "bdgf_map.tif")
    maps[BDGF] = gdal.Open(str(d / "bdgf_map.tif")).ReadAsArray().astype(np.int64)
    print(f"{variant} seed {seed}: BDGF train + classify {time.perf_counter() - t0:.0f} s", flush=True)

    scored = np.ones(reference.size, bool)
    scored[np.concatenate([sp.train, sp.val])] = False
    result = score(maps, reference, sp.test, scored.reshape(reference.shape), codes)
    for name, r in result.items():
        print(f"{variant} seed {seed} {name}: test polygons {r['test_oa']:.2f}, whole map {r['map_oa']:.2f}, "
              f"boundary {r['boundary_oa']:.2f}, interior {r['interior_oa']:.2f}", flush=True)
    return {"models": result, "classes": [c.name for c in gt.classes], "n_test": int(sp.test.size)}


def half_label_rasters(work: Path, inputs: dict) -> tuple[Path, Path, dict]:
    """The reference map cut in two label rasters: the left half for training, the right half for testing.

    Adjacent regions of a class merge into one connected region, so each class is mostly one large
    region, as in a real label raster (issue 15's Sentinel-1/2 scene). Also returns, per class, the
    share of its training pixels in its largest connected region."""
    from osgeo import gdal

    from bdgf_core.groundtruth import load_ground_truth
    from bdgf_core.raster import RasterSource, create_raster
    from bdgf_core.scene import CLASSES

    src = RasterSource(inputs["reference"])
    ref = src.read()[0].astype(np.uint8)
    w = ref.shape[1]
    train, test = ref.copy(), ref.copy()
    train[:, w // 2:] = 0
    test[:, :w // 2] = 0
    paths = work / "train_half.tif", work / "test_half.tif"
    for path, a in zip(paths, (train, test)):
        if not path.exists():  # with the scene's class names and colours, as a user's label raster would have
            with create_raster(path, src.grid, 1, gdal.GDT_Byte, None) as w:
                w.write(0, 0, a)
                w.set_categories(list(range(1, len(CLASSES) + 1)), [c[0] for c in CLASSES], [c[3] for c in CLASSES])
    gt = load_ground_truth(paths[0], src.grid)
    largest = {}
    for c in gt.classes:
        regions = gt.regions[gt.labels == c.code]
        largest[c.name] = float(np.bincount(regions).max() / regions.size)
    return paths[0], paths[1], largest


def validation_part(work: Path, inputs: dict, seeds: list[int], epochs: int, samples: int,
                    shares: tuple[float, ...] = (VALIDATION_SHARE, 0.0)) -> str:
    """BDGF trained on a label raster whose classes are mostly one region, with and without validation."""
    train, test, largest = half_label_rasters(work, inputs)
    rows: dict[str, list[float]] = {}
    for share in shares:
        name = f"validation share {share:g}" + (" (the dialog's default)" if share else " (no validation set)")
        for seed in seeds:
            cache = work / f"validation_{share:g}_{seed}_{epochs}_{samples}.json"
            if not cache.exists():
                t0 = time.perf_counter()
                cli("train", "--spectral", inputs["spectral"], "--sar", inputs["sar"], "--features", inputs["features"],
                    "--groundtruth", train, "--test-groundtruth", test, "--samples-per-class", samples,
                    "--validation-share", share, "--epochs", epochs, "--seed", seed, "--device", "cpu",
                    "--test-cap", 0, "--model", work / f"half_{share:g}.bdgf", "--report", work / f"half_{share:g}.html")
                j = json.loads((work / f"half_{share:g}.json").read_text())
                cache.write_text(json.dumps({"oa": j["test_accuracy"]["oa"], "aa": j["test_accuracy"]["aa"],
                                             "validation": j["split"]["validation"]}))
                print(f"validation {share:g} seed {seed}: OA {json.loads(cache.read_text())['oa']:.2f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            rows.setdefault(name, []).append(json.loads(cache.read_text()))
    lines = ["| training | test OA % | test AA % | validation pixels |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {mean_sd([x['oa'] for x in r])} | {mean_sd([x['aa'] for x in r])} | "
                     f"{mean_sd([x['validation'] for x in r])} |")
    share = ", ".join(f"{k} {v * 100:.0f} %" for k, v in largest.items())
    return ("## Validation on a label raster whose classes are mostly one region (issue 15)\n\n"
            "The reference map's left half as the training label raster, its right half as the test layer "
            f"(`--test-groundtruth`), {samples} training pixels per class, BDGF with fast features, {epochs} epochs. "
            f"Share of each class's training pixels in its largest connected region: {share}. The validation "
            "share is taken as blocks inside the regions, never a region whole (bdgf_core/sampling.py).\n\n"
            + "\n".join(lines))


def mean_sd(values: list[float]) -> str:
    a = np.asarray(values, float)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if a.size > 1 else f"{a.mean():.2f}"


def tables(runs: list[dict]) -> str:
    names = list(runs[0]["models"])
    lines = ["| model | OA % held-out polygons | OA % whole map | OA % boundary pixels | OA % interior pixels | "
             "% of errors on boundary pixels |", "|---|---|---|---|---|---|"]
    for n in names:
        col = lambda k: mean_sd([r["models"][n][k] for r in runs])  # noqa: E731
        lines.append(f"| {n} | {col('test_oa')} | {col('map_oa')} | {col('boundary_oa')} | {col('interior_oa')} | "
                     f"{col('errors_on_boundary')} |")
    r0 = runs[0]
    lines += ["", f"Scored: {r0['models'][names[0]]['n_map']} pixels of the map (all but the training and validation "
              f"pixels), {r0['models'][names[0]]['n_boundary']} of them boundary pixels; held-out polygons: "
              f"{r0['n_test']} pixels (first seed).", "",
              "Producer's accuracy per class, whole map / boundary pixels (%, mean over seeds):", "",
              "| model | " + " | ".join(r0["classes"]) + " |", "|---|" + "---|" * len(r0["classes"])]
    for n in names:
        pa = np.nanmean([r["models"][n]["map_pa"] for r in runs], 0)
        pb = np.nanmean([r["models"][n]["boundary_pa"] for r in runs], 0)
        lines.append(f"| {n} | " + " | ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(pa, pb)) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--pretrain-steps", type=int, default=None, help="default: the fast profile's")
    ap.add_argument("--variant", nargs="+", default=["standard", "hard"], choices=["standard", "hard"])
    ap.add_argument("--part", nargs="+", default=["maps", "validation"], choices=["maps", "validation"],
                    help="maps: whole-map scores of every model; validation: BDGF with and without a validation "
                         "set on a label raster of large regions (standard variant)")
    ap.add_argument("--validation-shares", type=float, nargs="+", default=[VALIDATION_SHARE, 0.0],
                    help="the validation shares compared in the validation part")
    ap.add_argument("--work", default=str(ROOT / "build" / "bench_maps"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "maps.md"))
    args = ap.parse_args()
    work = Path(args.work)
    t0 = time.perf_counter()
    sections = []
    for variant in args.variant if "maps" in args.part else []:
        inputs = scene_inputs(work, variant, args.size, args.pretrain_steps)
        runs = []
        for seed in args.seeds:
            cache = work / variant / f"run_{seed}_{args.epochs}_{args.samples}.json"
            if not cache.exists():
                cache.write_text(json.dumps(run_seed(work, variant, inputs, seed, args.epochs, args.samples)))
            runs.append(json.loads(cache.read_text()))
        sections.append(f"## Scene `--variant {variant}` ({args.size} x {args.size}, 60 spectral + 2 SAR bands)\n\n"
                        f"Polygon split, {args.samples} training pixels per class, validation share "
                        f"{VALIDATION_SHARE}; BDGF: fast features, {args.epochs} epochs, patch 9, CPU.\n\n"
                        + tables(runs))
    if "validation" in args.part:
        inputs = scene_inputs(work, "standard", args.size, args.pretrain_steps)
        sections.append(validation_part(work / "standard", inputs, args.seeds, args.epochs, args.samples,
                                        tuple(args.validation_shares)))
    write(args, t0, sections)


def write(args, t0: float, sections: list[str]) -> None:
    import torch

    head = ("# Whole-map accuracy (issue 15)\n\n"
            f"Command: `.venv/bin/python benchmarks/bench_maps.py --seeds {' '.join(map(str, args.seeds))} --epochs "
            f"{args.epochs} --variant {' '.join(args.variant)} --part {' '.join(args.part)}`\n\n"
            f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
            f"{platform.python_version()}; this invocation took {time.perf_counter() - t0:.0f} s (cached runs are "
            f"reused). Mean ± standard deviation over {len(args.seeds)} seed(s). Load average at writing: "
            f"{os.getloadavg()[0]:.1f} (a shared machine).\n\n"
            "Every model is trained on the same pixels (the polygon split of `train` at the dialog's defaults) "
            "and scored on the same pixels: the held-out polygons, which stop short of class borders as surveys "
            "do, and the whole map against the scene's `reference.tif` (all but the training and validation "
            "pixels), split into boundary pixels (within 2 px, Euclidean, of another class) and interior "
            "pixels (`bdgf_core/mapscore.py`).\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(head + "\n" + "\n\n".join(sections) + "\n")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
