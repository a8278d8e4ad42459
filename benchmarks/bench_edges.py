"""Issue 15: BDGF's accuracy at class edges, scored on whole maps against the random forests.

    .venv/bin/python benchmarks/bench_edges.py --variant standard --size 160 --seeds 0 1 \\
        --epochs 15 --rows paper centre flips mix ...

For each scene (``generate_scene``, scene seed 0) the full reference map of every pixel is
rebuilt in-process from the generator's own random draws (checked against its polygons), the
``fast`` diffusion features are pretrained once (``pretrain --profile fast``, cached under
.bench/edges/), and for each training seed (the seed draws the polygon split, 50 pixels per
class, 10 % validation, and initialises the network) every row trains BDGF with its switches,
classifies every pixel of the scene and is scored on all pixels, on boundary pixels (within 2 px
of another class, Euclidean) and on interior pixels. The baselines on the same split: the
per-pixel random forest (bdgf_core/baseline.py, 200 trees, training + validation pixels, as
``train-baseline``) and forests on the pixel plus its 3 x 3 and 5 x 5 window means.
Each finished (row, seed) is cached in the work folder: an interrupted run resumes.

Writes docs/bench/edges.md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import cli, cpu_model  # noqa: E402

#: row name -> BDGFConfig overrides (patch size included); "paper" is the network as the paper has it
ROWS = {
    "paper": dict(centre=False, flips=False, mix_share=0.0, adaptive=False),
    "centre": dict(centre=True, flips=False, mix_share=0.0, adaptive=False),
    "flips": dict(centre=False, flips=True, mix_share=0.0, adaptive=False),
    "mix": dict(centre=False, flips=False, mix_share=0.5, adaptive=False),
    "centre+flips": dict(centre=True, flips=True, mix_share=0.0, adaptive=False),
    "centre+mix": dict(centre=True, flips=False, mix_share=0.5, adaptive=False),
    "centre+flips+mix": dict(centre=True, flips=True, mix_share=0.5, adaptive=False),
    "flips+mix": dict(centre=False, flips=True, mix_share=0.5, adaptive=False),
    "p5": dict(centre=False, flips=False, mix_share=0.0, patch=5, adaptive=False),
    "centre+flips+mix+p5": dict(centre=True, flips=True, mix_share=0.5, patch=5, adaptive=False),
    "centre+flips+mix0.25": dict(centre=True, flips=True, mix_share=0.25, adaptive=False),
    "centre+flips+mix1": dict(centre=True, flips=True, mix_share=1.0, adaptive=False),
    "centre+flips+mix+ce": dict(centre=True, flips=True, mix_share=0.5, centre_ce=1.0, adaptive=False),
    "adaptive": dict(centre=False, flips=False, mix_share=0.0, adaptive=True),
    "adaptive+centre": dict(centre=True, flips=False, mix_share=0.0, adaptive=True),
    "adaptive+centre+flips+mix1": dict(centre=True, flips=True, mix_share=1.0, adaptive=True),
    "defaults": dict(),
}
# Results kept from before the tie rule (commit 1e503b5: of equal validation OAs the first epoch was kept;
# now the one of lowest validation loss): read back with --cached-only, a new run would use today's rule.
ROWS.update({f"{k}-v1": ROWS[k] for k in ("paper", "adaptive", "adaptive+centre")})
#: the paper's Table II ablations (experiments 1-11; 12, every module on, is the `adaptive` row) on
#: train's defaults. "features": "plain" reads diffusion features pretrained with --no-masking (exp. 10).
TABLE2 = {
    "T2-1 CNN": dict(use_transformer=False, use_mamba=False),
    "T2-2 Trans": dict(use_cnn=False, use_mamba=False),
    "T2-3 Mamba": dict(use_cnn=False, use_transformer=False),
    "T2-4 Trans+Mamba": dict(use_cnn=False),
    "T2-5 CNN+Mamba": dict(use_transformer=False),
    "T2-6 CNN+Trans": dict(use_mamba=False),
    "T2-7 no Guide-CNN": dict(guide_cnn=False),
    "T2-8 no Guide-Trans": dict(guide_transformer=False),
    "T2-9 no Guide-Mamba": dict(guide_mamba=False),
    "T2-10 no mask": dict(features="plain"),
    "T2-11 no mutual": dict(mutual=False),
}
ROWS.update(TABLE2)
#: mutual learning with eq. 29 as printed (no CE on the branch heads; train's default gives them one)
ROWS["mutual, eq. 29 as printed"] = dict(branch_ce_weight=0.0)
FORESTS = ("random forest (per pixel)", "random forest (pixel + 3x3, 5x5 window means)")
#: bench_maps.py's other baselines, on the same pixels (cached apart: they came later)
MORE = {"random forest, 9 x 9 means": "random forest (9 x 9 window means)",
        "RBF SVM, per pixel (standardised)": "RBF SVM (per pixel, standardised, C by 3-fold CV)"}


def edge_distance(ref: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from each pixel's centre to the nearest pixel of another class."""
    d = np.zeros(ref.shape, np.float64)
    for c in np.unique(ref):
        m = ref == c
        d[m] = ndimage.distance_transform_edt(m)[m]
    return d


def scores(pred: np.ndarray, ref: np.ndarray, dist: np.ndarray) -> dict:
    """OA % over all pixels, boundary pixels (within 2 px of another class) and interior pixels, and the
    share % of wrong pixels within 1.5 px of an edge (the issue's measure)."""
    ok = pred == ref
    b = dist <= 2.0
    return {"oa": 100 * ok.mean(), "boundary": 100 * ok[b].mean(), "interior": 100 * ok[~b].mean(),
            "wrong_1.5px": 100 * (~ok[dist <= 1.5]).mean()}


class Scene:
    """One embedded scene with its reference, features and normalisation, read once."""

    def __init__(self, work: Path, variant: str, size: int) -> None:
        from bdgf_core.raster import RasterSource
        from bdgf_core.scene import generate_scene

        self.dir = work / f"{variant}_{size}"
        self.dir.mkdir(parents=True, exist_ok=True)
        s, a, g = self.dir / "spectral.tif", self.dir / "sar.tif", self.dir / "groundtruth.gpkg"
        if not (self.dir / "reference.tif").exists():  # the generator's own every-pixel truth
            generate_scene(self.dir, size=size, variant=variant, seed=0)
        self.paths = (s, a, g)
        self.ref = RasterSource(self.dir / "reference.tif").read()[0].astype(np.int32)
        self.dist = edge_distance(self.ref)
        f = self.dir / "features_fast.tif"
        if not f.exists():
            t0 = time.perf_counter()
            cli("pretrain", "--spectral", s, "--sar", a, "--profile", "fast", "--device", "cpu",
                "--model", self.dir / "ddpm_fast.bdgf", "--features", f)
            print(f"{variant} {size}: pretrain fast {time.perf_counter() - t0:.0f} s", flush=True)
        self.features = np.nan_to_num(RasterSource(f).read()).astype(np.float32)
        self._plain: Optional[np.ndarray] = None
        self._prepared: dict = {}  # the last seed's prepare_training (only one kept: the images are large)
        self._fingerprints: dict[int, str] = {}  # every seed's, kept: reading one back means preparing it again

    def features_of(self, kind: str) -> np.ndarray:
        """The diffusion features: "masked" (pretrain's default) or "plain" (--no-masking, Table II exp. 10)."""
        if kind == "masked":
            return self.features
        if self._plain is None:
            from bdgf_core.raster import RasterSource

            f = self.dir / "features_plain.tif"
            if not f.exists():
                s, a, _ = self.paths
                cli("pretrain", "--spectral", s, "--sar", a, "--profile", "fast", "--no-masking", "--device", "cpu",
                    "--model", self.dir / "ddpm_plain.bdgf", "--features", f)
            self._plain = np.nan_to_num(RasterSource(f).read()).astype(np.float32)
        return self._plain

    def prepared(self, seed: int):
        """``samples.prepare_training`` of a training seed as ``train`` calls it (read once per seed)."""
        if seed not in self._prepared:
            from bdgf_core.progress import Reporter
            from bdgf_core.samples import prepare_training

            s, a, g = self.paths
            self._prepared = {seed: prepare_training(str(s), str(a), str(g), "class", 50, "polygons", seed, 0.1, 32,
                                                     Reporter())}
        return self._prepared[seed]

    def fingerprint(self, seed: int) -> str:
        """The fingerprint of a training seed's split (cached results are keyed by it)."""
        if seed not in self._fingerprints:
            self._fingerprints[seed] = self.prepared(seed).split.fingerprint
        return self._fingerprints[seed]

    def split(self, seed: int):
        """(normalised spectral, SAR, train pixels, val pixels, codes) of a training seed, as ``train`` makes them."""
        from bdgf_core.normalise import apply

        data = self.prepared(seed)
        spectral = np.nan_to_num(apply(data.spectral.read(), *data.spectral_stats)).astype(np.float32)
        sar = np.nan_to_num(apply(data.sar.read(), *data.sar_stats)).astype(np.float32)
        codes = data.codes()
        index = {c: i for i, c in enumerate(codes)}
        labels = data.gt.labels.ravel()
        w = spectral.shape[2]

        def pixels(flat):
            r, c = np.divmod(flat, w)
            return r, c, np.array([index[int(v)] for v in labels[flat]], np.int64)

        return spectral, sar, pixels(data.split.train), pixels(data.split.val), np.asarray(codes)


def train_map(scene: Scene, seed: int, epochs: int, overrides: dict):
    """Train BDGF on a seed's split with the config overrides and classify every pixel:
    (net in eval mode, class codes, map of codes (H, W) int32, history, train seconds, map seconds)."""
    import torch

    from bdgf_core.network.bdgf import BDGFConfig
    from bdgf_core.patches import pad_reflect
    from bdgf_core.training import fit_bdgf, predict_block

    spectral, sar, train, val, codes = scene.split(seed)
    overrides = dict(overrides)
    features = scene.features_of(overrides.pop("features", "masked"))
    cfg = BDGFConfig(epochs=epochs, seed=seed, **overrides)
    t0 = time.perf_counter()
    net, hist = fit_bdgf(spectral, sar, features, train, val, len(codes), cfg, "cpu")
    t1 = time.perf_counter()
    p = cfg.patch
    with torch.inference_mode():
        probs = predict_block(net, pad_reflect(spectral, p), pad_reflect(sar, p), pad_reflect(features, p), p,
                              batch_size=256)
    t2 = time.perf_counter()
    return net.eval(), codes, codes[probs.argmax(0)].astype(np.int32), hist, round(t1 - t0, 1), round(t2 - t1, 1)


def bdgf_row(scene: Scene, seed: int, epochs: int, overrides: dict) -> dict:
    _, _, pred, hist, train_s, map_s = train_map(scene, seed, epochs, overrides)
    out = scores(pred, scene.ref, scene.dist)
    out.update(train_s=train_s, map_s=map_s, best_epoch=hist["best_epoch"])
    return out


def window_features(spectral: np.ndarray, sar: np.ndarray) -> np.ndarray:
    """(C, H, W) normalised images -> (H * W, 3 C): the pixel and its 3 x 3 and 5 x 5 means (reflected borders)."""
    x = np.concatenate([spectral, sar])
    parts = [x] + [ndimage.uniform_filter(x, size=(1, k, k), mode="reflect") for k in (3, 5)]
    return np.concatenate(parts).reshape(3 * x.shape[0], -1).T


def forest_rows(scene: Scene, seed: int) -> dict[str, dict]:
    from bdgf_core.baseline import fit_forest, forest_proba

    spectral, sar, train, val, codes = scene.split(seed)
    w = spectral.shape[2]
    flat = np.concatenate([train[0] * w + train[1], val[0] * w + val[1]])  # as train-baseline: no validation
    y = np.concatenate([train[2], val[2]])
    out = {}
    per_pixel = np.concatenate([spectral, sar]).reshape(spectral.shape[0] + sar.shape[0], -1).T
    for name, x in zip(FORESTS, (per_pixel, window_features(spectral, sar))):
        t0 = time.perf_counter()
        forest = fit_forest(x[flat], y, trees=200, seed=seed, n_jobs=1)
        pred = codes[forest_proba(forest, x).argmax(1)].reshape(spectral.shape[1:])
        out[name] = {**scores(pred, scene.ref, scene.dist), "train_s": round(time.perf_counter() - t0, 1)}
    return out


def more_rows(scene: Scene, seed: int) -> dict[str, dict]:
    from bench_maps import baseline_maps

    spectral, sar, train, val, codes = scene.split(seed)
    w = spectral.shape[2]
    flat = np.concatenate([train[0] * w + train[1], val[0] * w + val[1]])
    t0 = time.perf_counter()
    maps = baseline_maps(spectral, sar, np.concatenate([train[2], val[2]]), flat, seed)
    s = round(time.perf_counter() - t0, 1)
    return {row: {**scores(codes[maps[name]], scene.ref, scene.dist), "train_s": s} for name, row in MORE.items()}


def cached(folder: Path, key: str, fn, only_cached: bool = False):
    """fn()'s result, kept in a file of its own per key (parallel runs of the benchmark do not collide);
    None when ``only_cached`` and it was never computed."""
    path = folder / (key.replace("/", "__").replace(" ", "_").replace(",", "").replace("+", "-") + ".json")
    if not path.exists() and only_cached:
        return None
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        result = fn()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
    return json.loads(path.read_text())


def summarise(vals: list[dict], key: str) -> str:
    a = np.array([v[key] for v in vals])
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| row | seeds | whole map OA % | boundary OA % (<= 2 px) | interior OA % | wrong % within 1.5 px "
             "| training s |", "|---|---|---|---|---|---|---|"]
    for name, vals in results.items():
        if vals:
            lines.append(f"| {name} | {len(vals)} | {summarise(vals, 'oa')} | {summarise(vals, 'boundary')} | "
                         f"{summarise(vals, 'interior')} | {summarise(vals, 'wrong_1.5px')} | "
                         f"{np.mean([v['train_s'] for v in vals]):.0f} |")
    return "\n".join(lines)


def run_scene(args, work: Path, variant: str, size: int) -> str:
    """Run (or read back) every row and seed on one scene; its section of the report."""
    scene = Scene(work, variant, size)
    store = scene.dir / "results"
    only = args.cached_only
    results: dict[str, list[dict]] = {k: [] for k in [*([] if args.no_forests else [*FORESTS, *MORE.values()]),
                                                      *args.rows]}
    by_seed: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        fp = scene.fingerprint(seed)  # a result holds for its split: keyed by it
        forests = {} if args.no_forests else cached(store, f"forests/{seed}/{fp}", lambda: forest_rows(scene, seed),
                                                    only)
        if not args.no_forests:
            forests = {**(forests or {}), **(cached(store, f"baselines/{seed}/{fp}", lambda: more_rows(scene, seed),
                                                    only) or {})}
        for name, r in (forests or {}).items():
            results[name].append(r)
            print(f"{variant} {size} seed {seed} {name}: OA {r['oa']:.2f}, boundary {r['boundary']:.2f}", flush=True)
        for row in args.rows:
            r = cached(store, f"{row}/{args.epochs}/{seed}/{fp}", lambda: bdgf_row(scene, seed, args.epochs, ROWS[row]),
                       only)
            if r is None:
                continue
            results[row].append(r)
            by_seed.setdefault(row, {})[seed] = r
            print(f"{variant} {size} seed {seed} {row}: OA {r['oa']:.2f}, boundary {r['boundary']:.2f}, interior "
                  f"{r['interior']:.2f} (train {r['train_s']} s, map {r['map_s']} s)", flush=True)
    n_b = int((scene.dist <= 2).sum())
    return (f"## `--variant {variant}`, {size} x {size} ({n_b} boundary pixels of {scene.ref.size})\n\n"
            f"{table(results)}{paired(by_seed, args.base)}")


def paired(by_seed: dict[str, dict[int, dict]], base: str = "paper") -> str:
    """Each row against ``base`` on the seeds both have: mean ± std of the per-seed differences (pp)."""
    lines = []
    for row, runs in by_seed.items():
        common = sorted(set(runs) & set(by_seed.get(base, {}))) if row != base else []
        if len(common) < 2:
            continue
        d = {k: np.array([runs[s][k] - by_seed[base][s][k] for s in common]) for k in ("oa", "boundary", "interior")}
        lines.append(f"- `{row}` minus `{base}`, paired over seeds {', '.join(map(str, common))}: whole map "
                     f"{d['oa'].mean():+.2f} ± {d['oa'].std(ddof=1):.2f} pp (worst seed {d['oa'].min():+.2f}), "
                     f"boundary {d['boundary'].mean():+.2f} ± {d['boundary'].std(ddof=1):.2f} pp, interior "
                     f"{d['interior'].mean():+.2f} ± {d['interior'].std(ddof=1):.2f} pp")
    return ("\n\n" + "\n".join(lines)) if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs="+", default=["standard"], choices=["standard", "hard"])
    ap.add_argument("--size", type=int, nargs="+", default=[160])
    ap.add_argument("--cached-only", action="store_true",
                    help="only write the tables of the rows already computed (each row says over how many seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--rows", nargs="+", default=["paper", "centre", "flips", "mix"], choices=list(ROWS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--base", default="paper", help="the row the others are paired against")
    ap.add_argument("--no-forests", action="store_true", help="only the BDGF rows (another run does the forests)")
    ap.add_argument("--work", default=str(ROOT / ".bench" / "edges"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "edges.md"))
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sections = []
    for size in args.size:
        for variant in args.variant:
            sections.append(run_scene(args, work, variant, size))
    cmd = " ".join(["python benchmarks/bench_edges.py", *sys.argv[1:]])
    text = (f"# Class edges (issue 15)\n\nCommand: `{cmd}`\n\nMachine: {cpu_model()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, Python {platform.python_version()}; {time.perf_counter() - t_start:.0f} s "
            f"(cached rows are reused). Mean ± std over seeds; {args.epochs} epochs, patch 9 unless the row says, "
            "fast diffusion features; every pixel of the map scored against the generator's reference.\n\n"
            "Rows: `paper` is the paper's network (every edge switch off); `adaptive` edge-aware patches "
            "(train's default); `centre` the centre-pixel feature in the fused head; `flips` flips and "
            "rotations; `mix` mixed patches (share 0.5 unless the row says); `+` combines them; `defaults` is "
            "what `train` does without edge flags. Baselines, fitted on the training + validation pixels of "
            "the same split: forests of 200 trees on the pixel, on the pixel with its 3 x 3 and 5 x 5 window "
            "means, on 9 x 9 window means, and an RBF SVM on standardised pixels (bench_maps.py's). "
            "`-v1` rows were computed before the tie rule (of equal validation OAs the first epoch was kept, now "
            "the one of lowest validation loss). `T2-n` rows are the paper's Table II experiments 1-11 on "
            "train's defaults (experiment 12, every module on, is `adaptive`): single branches (1-3), pairs "
            "(4-6), one branch's diffusion guidance off (7-9), features pretrained without modality masking "
            "(10), mutual learning off (11).\n\n"
            + "\n\n".join(sections) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
