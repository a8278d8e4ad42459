"""Issue 15: diffusion features pooled per modality against the old plain spectral-axis mean.

    python benchmarks/bench_feature_pooling.py [--variant hard] [--epochs 10] [--seeds 0 1 2]

One 'fast' pretraining (``pretrain --profile fast``, defaults) of the scene; its features are
written twice from the same network: pooled per modality (the default since issue 15, feature
format 2) and with the old mean over the whole merged axis (format 1; the projection is fitted
again for it). Then, on each: a linear probe (benchmarks/linear_probe.py, polygon splits, split
seeds 0-2) and ``train`` (polygon split, 50 pixels per class, --epochs) per seed, test OA.
The pooling is the only difference: same weights, same noise, same channel count.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from linear_probe import ground_truth, mean_probe, scene, splits  # noqa: E402


def cli(*args) -> dict:
    """``python -m bdgf_core ARGS --progress json``: its outputs."""
    cmd = [sys.executable, "-m", "bdgf_core", *[str(a) for a in args], "--progress", "json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    return next(e["outputs"] for e in events if e["event"] == "result")


def mean_pooled_raster(model_path: Path, like: Path, out: Path, sc) -> None:
    """The features of the same diffusion model with the old plain mean (format 1), on the grid of ``like``."""
    from osgeo import gdal

    from bdgf_core.diffusion import DiffusionModel, extract_features_array
    from bdgf_core.raster import RasterSource

    model = DiffusionModel.load(model_path)
    model.config.feature_pooling = "mean"
    model.projection = None  # refitted on the mean-pooled channels
    feats = extract_features_array(model, RasterSource(sc.spectral).read(), RasterSource(sc.sar).read())
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(out), gdal.Open(str(like)))
    for i, band in enumerate(feats):
        ds.GetRasterBand(i + 1).WriteArray(band)
    ds.SetMetadataItem("BDGF_DIFFUSION_FEATURE_FORMAT", "1")
    ds = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="hard", choices=["standard", "hard"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="/tmp/bdgf_pooling")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sc = scene(work, args.variant)
    model, feats = work / "fast.bdgf", {"modality": work / "modality.tif", "mean": work / "mean.tif"}
    started = time.time()
    if not feats["modality"].exists():
        out = cli("pretrain", "--spectral", sc.spectral, "--sar", sc.sar, "--profile", "fast",
                  "--model", model, "--features", feats["modality"])
        print("pretrain", json.dumps({k: out[k] for k in ("pretrain_seconds", "features_seconds")}), flush=True)
    if not feats["mean"].exists():
        mean_pooled_raster(model, feats["modality"], feats["mean"], sc)
    gt = ground_truth(sc)
    split_list = splits(gt, (0, 1, 2))
    result: dict = {"variant": args.variant, "epochs": args.epochs, "seeds": args.seeds}
    for name, path in feats.items():
        from linear_probe import read

        probe = mean_probe(read(path), gt, split_list)
        result[f"probe/{name}"] = round(probe["oa"], 2)
        print(name, "linear probe OA", result[f"probe/{name}"], flush=True)
    for seed in args.seeds:
        for name, path in feats.items():
            out = cli("train", "--spectral", sc.spectral, "--sar", sc.sar, "--groundtruth", sc.groundtruth,
                      "--split", "polygons", "--samples-per-class", 50, "--epochs", args.epochs, "--seed", seed,
                      "--test-cap", 0, "--model", work / f"bdgf_{name}_{seed}.bdgf", "--features", path)
            result[f"train/{name}/{seed}"] = round(float(out["test_oa"]), 2)
            print(name, seed, "BDGF test OA", result[f"train/{name}/{seed}"], flush=True)
    for name in feats:
        result[f"train/{name}/mean"] = round(float(np.mean([result[f"train/{name}/{s}"] for s in args.seeds])), 2)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
