"""How much the paper's random pixel split flatters accuracy: random-forest OA / AA / Kappa under the
``pixels`` and ``polygons`` splits, 50 training pixels per class, 5 seeds.

Data:
- Houston2013 (real; ../shared/data/houston2013): the 2832 labelled pixels of the GRSS 2013 training
  raster, 144 HSI bands + 21 LiDAR features per pixel. The .mat rows are the nonzero pixels of
  ``2013_IEEE_GRSS_DF_Contest_Samples_TR.tif`` in row-major order; that raster, read by bdgf_core as
  a label raster, gives each pixel its position and its connected region (8-connected), which
  stands for a polygon.
- The embedded synthetic scene (``python -m bdgf_core generate-scene`` at its defaults: 200 x 200
  pixels, 60 spectral + 2 SAR bands, ground-truth polygons).

Everything goes through bdgf_core: ``load_ground_truth`` / ``prepare_training`` and ``split_samples``
for the splits, ``fit_forest`` / ``forest_proba`` (200 trees, as ``train-baseline``) for the
baseline, ``assess`` for the metrics. One thread (OMP_NUM_THREADS=1, n_jobs=1).

    .venv/bin/python benchmarks/bench_splits.py            # writes docs/bench/splits.md

Not a test: it takes a few minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cpu_model  # noqa: E402
SHARED = Path(os.environ.get("BDGF_SHARED", ROOT.parent / "shared"))
HOUSTON = SHARED / "data" / "houston2013"
OUT = ROOT / "docs" / "bench" / "splits.md"
STRATEGIES = ("pixels", "polygons")
METRICS = ("oa", "aa", "kappa")


def forest_run(x_train, y_train, x_test, y_test, codes, trees, seed) -> dict:
    from bdgf_core.baseline import fit_forest, forest_proba
    from bdgf_core.metrics import assess

    forest = fit_forest(x_train, y_train, trees, seed, n_jobs=1)
    pred = forest["classes"][forest_proba(forest, np.nan_to_num(x_test)).argmax(1)]
    acc = assess(y_test, pred, codes)
    return {"oa": acc.oa, "aa": acc.aa, "kappa": acc.kappa}


def load_houston():
    """Houston2013's training pixels and the TR label raster they come from (regions = polygons).

    Returns (hsi (N, 144), lidar (N, 21), gt, row_of): ``row_of[flat pixel]`` is the .mat row of a
    labelled pixel of the raster (-1 elsewhere)."""
    from scipy.io import loadmat

    from bdgf_core.groundtruth import load_ground_truth
    from bdgf_core.raster import RasterSource

    hsi = loadmat(HOUSTON / "HSI_TrSet.mat")["HSI_TrSet"].astype(np.float32)        # (2832, 144)
    lidar = loadmat(HOUSTON / "LiDAR_TrSet.mat")["LiDAR_TrSet"].astype(np.float32)  # (2832, 21)
    y = loadmat(HOUSTON / "TrLabel.mat")["TrLabel"].ravel().astype(np.int64)
    tr_tif = HOUSTON / "2013_IEEE_GRSS_DF_Contest_Samples_TR.tif"
    gt = load_ground_truth(tr_tif, RasterSource(tr_tif, what="label raster").grid)
    labels = gt.labels.ravel()
    flat = np.flatnonzero(labels > 0)                       # row-major: the order of the .mat rows
    if flat.size != y.size or not np.array_equal(labels[flat], y):
        raise SystemExit("the Houston .mat rows do not match the nonzero pixels of the TR raster")
    row_of = np.full(labels.size, -1, np.int64)
    row_of[flat] = np.arange(flat.size)
    return hsi, lidar, gt, row_of


def houston(seeds, samples, trees) -> dict:
    from bdgf_core.baseline import pixel_features
    from bdgf_core.sampling import split_samples

    hsi, lidar, gt, row_of = load_houston()
    labels = gt.labels.ravel()
    flat = np.flatnonzero(labels > 0)
    y = labels[flat]
    stats = (hsi.mean(0), hsi.std(0) + 1e-12, lidar.mean(0), lidar.std(0) + 1e-12)
    x = pixel_features(hsi.T, lidar.T, stats)              # (2832, 165)
    codes = [c.code for c in gt.classes]
    regions = {c: int(np.unique(gt.regions.ravel()[flat][y == c]).size) for c in codes}
    out = {}
    for strategy in STRATEGIES:
        runs = []
        for seed in seeds:
            sp = split_samples(gt, samples, strategy, seed)
            r = forest_run(x[row_of[sp.train]], labels[sp.train], x[row_of[sp.test]], labels[sp.test], codes,
                           trees, seed)
            r.update(train=int(sp.train.size), test=int(sp.test.size), warnings=list(sp.warnings))
            runs.append(r)
        out[strategy] = runs
    return {"name": "Houston2013 (real HSI + LiDAR, GRSS 2013 training pixels)", "runs": out,
            "pixels": int(flat.size), "classes": len(codes), "regions": regions}


def synthetic(seeds, samples, trees, workdir: Path) -> dict:
    from bdgf_core.baseline import pixel_features
    from bdgf_core.progress import Reporter
    from bdgf_core.samples import prepare_training, values_at

    scene = workdir / "scene"
    subprocess.run([sys.executable, "-m", "bdgf_core", "generate-scene", "--out-dir", str(scene),
                    "--progress", "none"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    out = {}
    info = {}
    for strategy in STRATEGIES:
        runs = []
        for seed in seeds:
            data = prepare_training(str(scene / "spectral.tif"), str(scene / "sar.tif"),
                                    str(scene / "groundtruth.gpkg"), "class", samples, strategy, seed, 0.0, 32,
                                    Reporter("none"))
            labels = data.gt.labels.ravel()
            stats = (*data.spectral_stats, *data.sar_stats)

            def feats(idx):
                return pixel_features(values_at(data.spectral, idx).T, values_at(data.sar, idx).T, stats)

            sp = data.split
            train = np.concatenate([sp.train, sp.val])
            r = forest_run(feats(train), labels[train], feats(sp.test), labels[sp.test], data.codes(), trees, seed)
            r.update(train=int(train.size), test=int(sp.test.size), warnings=list(sp.warnings))
            runs.append(r)
            info = {"pixels": int((labels > 0).sum()), "classes": len(data.codes()),
                    "regions": {c.code: int(np.unique(data.gt.regions[data.gt.labels == c.code]).size)
                                for c in data.gt.classes}}
        out[strategy] = runs
    return {"name": "Synthetic demo scene (generate-scene defaults: 200 x 200, 60 + 2 bands)", "runs": out, **info}


def machine() -> str:
    import sklearn

    return (f"{cpu_model()}, {os.cpu_count()} logical cores (1 thread used); {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, "
            f"scikit-learn {sklearn.__version__}")


def fmt(runs, key) -> str:
    v = np.array([r[key] for r in runs], float)
    return f"{v.mean():.2f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.2f}"


def write(results, args, seconds) -> None:
    lines = ["# Pixel split vs polygon split: how much a random pixel split flatters accuracy", "",
             f"Written by `benchmarks/bench_splits.py` on {dt.date.today().isoformat()} in {seconds / 60:.1f} min.", "",
             "Command:", "", "```",
             f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_splits.py --seeds {args.seeds} "
             f"--samples {args.samples} --trees {args.trees}", "```", "",
             f"Machine: {machine()}.", "",
             f"Random forest ({args.trees} trees, bdgf_core's baseline), {args.samples} training pixels per class "
             f"drawn with bdgf_core's `split_samples`, seeds 0..{args.seeds - 1}; mean ± standard deviation over "
             "the seeds, in percent, on each split's own held-out test pixels.", "",
             "- **pixels**: the paper's protocol: N random labelled pixels per class for training, all the others "
             "for testing; test pixels lie next to training pixels.",
             "- **polygons**: whole regions per class (about half of each class's pixels) are held out for testing; "
             "the N training pixels come from the other regions only.", ""]
    for res in results:
        lines += [f"## {res['name']}", "",
                  f"{res['pixels']} labelled pixels, {res['classes']} classes; regions (polygons) per class: "
                  + ", ".join(f"{c}: {n}" for c, n in res["regions"].items()) + ".", "",
                  "| split | OA % | AA % | Kappa % | training px (mean) | test px (mean) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for strategy, runs in res["runs"].items():
            lines.append(f"| {strategy} | {fmt(runs, 'oa')} | {fmt(runs, 'aa')} | {fmt(runs, 'kappa')} | "
                         f"{np.mean([r['train'] for r in runs]):.0f} | {np.mean([r['test'] for r in runs]):.0f} |")
        gap = np.mean([r["oa"] for r in res["runs"]["pixels"]]) - np.mean([r["oa"] for r in res["runs"]["polygons"]])
        lines += ["", f"OA gap (pixels − polygons): {gap:+.2f} points: what the random pixel split adds to the "
                  "accuracy on these data, because its test pixels neighbour (and resemble) its training pixels."]
        warns = sorted({w for runs in res["runs"].values() for r in runs for w in r["warnings"]})
        if warns:
            lines += ["", "Split warnings (any seed):", ""] + [f"- {w}" for w in warns]
        lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--trees", type=int, default=200)
    args = ap.parse_args()
    if not HOUSTON.is_dir():
        raise SystemExit(f"{HOUSTON} is missing: the Houston2013 data live in ../shared/data (see its README)")
    seeds = list(range(args.seeds))
    started = time.time()
    results = [houston(seeds, args.samples, args.trees)]
    print(f"Houston2013 done in {time.time() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results.append(synthetic(seeds, args.samples, args.trees, Path(tmp)))
    write(results, args, time.time() - started)
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
