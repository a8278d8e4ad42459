"""Does modality masking do what the paper claims? A linear probe on the diffusion features (issue 3).

    python benchmarks/linear_probe.py [--seeds 0 1 2] [--split-seeds 0 1 2] [--threads 1]

On the embedded scene (``generate-scene`` defaults: 200x200, 60 spectral + 2 SAR bands), for
each pretraining seed: ``pretrain --profile fast`` with masking (Algorithm 1) and with
``--no-masking`` ("Concatenate Diff"), through the command line. Then a logistic regression
(scikit-learn, on standardised features) is fitted on the diffusion features ALONE, for each
polygon split seed (training and test pixels come from different polygons):

- per SAR-only pair of scene.py (classes with the same spectrum that differ only in SAR
  backscatter): balanced accuracy of a probe trained and tested on those two classes only;
- all classes: overall accuracy.

The paper's claim (Section III-A, Fig. 4) is that masking keeps the SAR information in the
features; the pairs that only SAR separates are where that shows. Results go into
docs/bench/diffusion.md (section "Linear probe"), with the command. Also imported by
bench_profiles.py for its probes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import cli  # noqa: E402

PROBE_SAMPLES = 200  # training pixels per class for the probe (from the training polygons)


def scene(work: Path, variant: str = "standard", size: int = 200, bands: int = 60):
    """The generated scene in work/<variant> (made once)."""
    from bdgf_core.scene import Scene, generate_scene

    d = work / (variant if (size, bands) == (200, 60) else f"{variant}_{size}_{bands}")
    if not (d / "groundtruth.gpkg").exists():
        generate_scene(d, size=size, bands=bands, seed=0, variant=variant)
    return Scene(d / "spectral.tif", d / "sar.tif", d / "groundtruth.gpkg")


def ground_truth(sc):
    from bdgf_core.groundtruth import load_ground_truth
    from bdgf_core.raster import RasterSource

    return load_ground_truth(sc.groundtruth, RasterSource(sc.spectral).grid, "class")


def splits(gt, seeds, samples: int = PROBE_SAMPLES):
    """Polygon splits (training and test pixels from different polygons), one per seed."""
    from bdgf_core.sampling import split_samples

    return [split_samples(gt, samples, "polygons", s) for s in seeds]


def read(path) -> np.ndarray:
    from bdgf_core.raster import RasterSource

    return np.nan_to_num(RasterSource(path).read().astype(np.float32))


def _fit_predict(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(X[train], y[train])
    return clf.predict(X[test])


def probe(features: np.ndarray, gt, split, pairs=()) -> dict:
    """Linear probe on features (F, H, W): OA over all classes (%) and balanced accuracy (%) per pair."""
    from sklearn.metrics import balanced_accuracy_score

    X = features.reshape(features.shape[0], -1).T
    y = gt.labels.ravel()
    out = {"oa": float(100 * (_fit_predict(X, y, split.train, split.test) == y[split.test]).mean())}
    for a, b in pairs:
        tr = split.train[np.isin(y[split.train], (a, b))]
        te = split.test[np.isin(y[split.test], (a, b))]
        out[f"pair {a}-{b}"] = float(100 * balanced_accuracy_score(y[te], _fit_predict(X, y, tr, te)))
    return out


def mean_probe(features: np.ndarray, gt, split_list, pairs=()) -> dict:
    runs = [probe(features, gt, s, pairs) for s in split_list]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]} | {"runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/bdgf_bench")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    from bench_diffusion import update_results

    from bdgf_core.scene import CLASSES, SAR_ONLY_PAIRS

    work = Path(args.work)
    sc = scene(work)
    gt = ground_truth(sc)
    split_list = splits(gt, args.split_seeds)
    rows = []
    started = time.time()
    for seed in args.seeds:
        for masking in (True, False):
            name = f"probe_{'mask' if masking else 'nomask'}_s{seed}"
            feat = work / f"{name}.tif"
            if not feat.exists():
                cli("pretrain", "--spectral", sc.spectral, "--sar", sc.sar, "--profile", "fast", "--seed", seed,
                    *([] if masking else ["--no-masking"]), "--model", work / f"{name}.bdgf", "--features", feat, env=env)
            r = mean_probe(read(feat), gt, split_list, SAR_ONLY_PAIRS)
            rows.append({"seed": seed, "masking": masking, **r})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
    pair_names = {f"pair {a}-{b}": f"{CLASSES[a - 1][0]} vs {CLASSES[b - 1][0]}" for a, b in SAR_ONLY_PAIRS}
    update_results("probe", {
        "command": "python benchmarks/linear_probe.py " + shlex.join(sys.argv[1:]),
        "seeds": args.seeds, "split_seeds": args.split_seeds, "threads": args.threads,
        "pairs": pair_names, "rows": rows, "seconds": round(time.time() - started, 1),
    })


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
