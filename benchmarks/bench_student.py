"""The opt-in fast map (``classify --fast student``) against its BDGF teacher, scored on whole maps.

    .venv/bin/python benchmarks/bench_student.py --variant standard hard --size 160 --seeds 0 1 2 \\
        --epochs 10 --threads 1

For each embedded scene (bench_edges.py's ``Scene``: scene seed 0, the generator's every-pixel
reference map, the ``fast`` diffusion features, reused from bench_edges' work folder) and each
training seed: the default BDGF network (``BDGFConfig(epochs, seed)``, bench_edges' ``defaults``
row) is trained exactly as bench_edges' ``bdgf_row`` trains it and predicts every pixel of the
scene (the teacher's map); a student is distilled from it with ``bdgf_core.student.distil``'s
defaults (samples, steps, width; seed = the training seed) on the scene's rasters opened as
``classify`` opens them; the student's map is predicted through classify's own per-block code
(``inference._read`` + ``inference._predict_block`` with a ``StudentPredictor``: the whole scene in
one block, reflect-padded as classification pads). Both maps are scored on every pixel against
the reference (whole map, boundary pixels within 2 px of another class, interior), and the
student's map is compared with the teacher's pixel by pixel.

Each (scene, epochs, seed) result is cached as JSON under ``--cache`` (with both maps as .npz):
an interrupted run resumes. Writes docs/bench/student.md (``--out``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOW_ARG = [32]  # distil's window side, from --window
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import cpu_model  # noqa: E402
from bench_edges import ROWS, Scene, cached, scores, train_map  # noqa: E402

#: the whole-map OA gap (student minus teacher, percentage points) the fast map is held to
TOLERANCE_PP = 0.5


def window_tag() -> str:
    """Cache-name suffix of a run whose distillation differs from the first runs' (windows of 32, 400 steps,
    no edge weight): the window side, then the steps and the edge weight where they differ."""
    from bdgf_core import student

    tag = "" if WINDOW_ARG[0] == 32 else f"_w{WINDOW_ARG[0]}"
    if student.STEPS != 400 or student.EDGE_WEIGHT:
        tag += f"_s{student.STEPS}_e{student.EDGE_WEIGHT:g}"
    return tag


def teacher(scene: Scene, seed: int, epochs: int):
    """bench_edges.train_map with ``ROWS["defaults"]``, keeping the network: (net, stats, codes, map, info)."""
    net, codes, pred, hist, train_s, map_s = train_map(scene, seed, epochs, ROWS["defaults"])
    data = scene.prepared(seed)  # the statistics ``train`` writes into the model file
    stats = {"spectral_mean": data.spectral_stats[0], "spectral_std": data.spectral_stats[1],
             "sar_mean": data.sar_stats[0], "sar_std": data.sar_stats[1]}
    return net, stats, codes, pred, {"train_s": train_s, "map_s": map_s, "best_epoch": hist["best_epoch"]}


def teacher_cached(scene: Scene, seed: int, epochs: int, store: Path):
    """:func:`teacher`, its network, statistics, codes and map kept in ``store`` (the student settings change
    more often than the teacher): (net, stats, codes, map, info)."""
    import torch

    from bdgf_core.network.bdgf import BDGFNet

    f = store / f"teacher_e{epochs}_{seed}_{scene.fingerprint(seed)}.pt"
    if f.exists():
        d = torch.load(f, weights_only=False)
        net = BDGFNet.from_meta(d["meta"])
        net.load_state_dict(d["state"])
        return net.eval(), d["stats"], d["codes"], d["t_map"], d.get("info", {})
    net, stats, codes, t_map, info = teacher(scene, seed, epochs)
    store.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": net.meta(), "state": net.state_dict(), "stats": stats, "codes": codes, "t_map": t_map,
                "info": info}, f)
    return net, stats, codes, t_map, info


def inputs_of(scene: Scene):
    """The scene's rasters as ``classify`` opens them (spectral grid, SAR aligned to it, the feature raster)."""
    from bdgf_core.inference import Inputs
    from bdgf_core.progress import Reporter
    from bdgf_core.raster import RasterSource
    from bdgf_core.samples import open_inputs

    s, a, _ = scene.paths
    spec, sar = open_inputs(str(s), str(a), Reporter(), "bilinear")
    return Inputs(spec, sar, RasterSource(scene.dir / "features_fast.tif", what="diffusion feature raster"))


def window_cover(inputs, seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixels inside the windows ``distil(..., seed=seed)`` samples on ``inputs``: distil itself is run with a
    stub teacher (uniform probabilities, one student step) and its window reads are recorded."""
    from types import SimpleNamespace

    import bdgf_core.student as student
    from bdgf_core.network.bdgf import BDGFConfig

    cfg = BDGFConfig()
    n = 2  # any class count: only the windows matter

    class Stub:
        patch, halo = cfg.patch, cfg.patch // 2
        net = SimpleNamespace(config=cfg)
        stats = {"spectral_mean": np.zeros(inputs.spectral.bands, np.float32),
                 "spectral_std": np.ones(inputs.spectral.bands, np.float32),
                 "sar_mean": np.zeros(inputs.sar.bands, np.float32), "sar_std": np.ones(inputs.sar.bands, np.float32)}

        def predict_block(self, spec, sar, feats):
            q = self.patch - 1
            return np.full((n, spec.shape[1] - q, spec.shape[2] - q), 1 / n, np.float32)

    cover = np.zeros(shape, bool)
    read = student.read_window

    def recording(inp, r0, c0, size, halo):
        cover[r0:r0 + size, c0:c0 + size] = True
        return read(inp, r0, c0, size, halo)

    student.read_window = recording
    try:
        student.distil(Stub(), inputs, steps=1, seed=seed)
    finally:
        student.read_window = read
    return cover


def class_table(scene: Scene, store: Path, epochs: int, runs: dict[int, dict]) -> str:
    """Per reference class and seed: teacher / student recall % and the share % of the class's pixels inside
    the windows the student was distilled on."""
    inputs = inputs_of(scene)
    classes = np.unique(scene.ref)
    cells = {c: [] for c in classes}
    for seed in runs:
        z = np.load(store / f"maps_e{epochs}_{seed}{window_tag()}_{scene.fingerprint(seed)}.npz")
        cover = window_cover(inputs, seed, scene.ref.shape)
        for c in classes:
            m = scene.ref == c
            cells[c].append(f"{100 * (z['teacher'][m] == c).mean():.0f} / {100 * (z['student'][m] == c).mean():.0f}"
                            f" / {100 * cover[m].mean():.0f}")
    lines = ["Per reference class (code, pixels): teacher recall % / student recall % / share % of the class's "
             "pixels inside the student's distillation windows, per seed.\n",
             "| class | pixels | " + " | ".join(f"seed {s}" for s in runs) + " |",
             "|---|---|" + "---|" * len(runs)]
    for c in classes:
        lines.append(f"| {c} | {int((scene.ref == c).sum())} | " + " | ".join(cells[c]) + " |")
    return "\n".join(lines) + "\n"


def agreement(a: np.ndarray, b: np.ndarray, dist: np.ndarray) -> dict:
    same = a == b
    edge = dist <= 2.0
    return {"all": 100 * same.mean(), "boundary": 100 * same[edge].mean(), "interior": 100 * same[~edge].mean()}


def run_seed(scene: Scene, seed: int, epochs: int, maps_dir: Path) -> dict:
    from bdgf_core.bdgf_model import BDGFPredictor
    from bdgf_core.inference import MAP_NODATA, _predict_block, _read
    from bdgf_core.student import StudentPredictor, distil

    net, stats, codes, t_map, t_info = teacher_cached(scene, seed, epochs, maps_dir)
    inputs = inputs_of(scene)
    tp = BDGFPredictor(net, stats, [int(c) for c in codes])
    t0 = time.perf_counter()
    snet, summary = distil(tp, inputs, seed=seed, window=WINDOW_ARG[0])
    t1 = time.perf_counter()
    sp = StudentPredictor(snet, stats, [int(c) for c in codes], net.config.needs_features, summary)
    h = inputs.spectral.height
    block = _read(inputs, 0, h, sp.halo)          # the whole scene as one block of classify
    s_map = _predict_block(sp, inputs, block, 0, h, sp.halo, np.asarray(codes), False, False)[0]
    t2 = time.perf_counter()
    maps_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(maps_dir / f"maps_e{epochs}_{seed}{window_tag()}_{scene.fingerprint(seed)}.npz",
                        teacher=t_map, student=s_map)
    return {"teacher": {**scores(t_map, scene.ref, scene.dist), **t_info},
            "student": {**scores(s_map, scene.ref, scene.dist), "nodata_pixels": int((s_map == MAP_NODATA).sum())},
            "agreement": agreement(s_map, t_map, scene.dist),
            "distil": {**summary, "wall_s": round(t1 - t0, 1)},
            "student_map_s": round(t2 - t1, 2)}


def ms(vals) -> str:
    a = np.asarray(vals, float)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if a.size > 1 else f"{a.mean():.2f}"


def section(variant: str, size: int, scene: Scene, runs: dict[int, dict], classes: str = "") -> str:
    n_b = int((scene.dist <= 2).sum())
    head = f"## `--variant {variant}`, {size} x {size} ({n_b} boundary pixels of {scene.ref.size})\n\n"
    if not runs:
        return head + "No seed computed yet.\n"
    r = list(runs.values())
    lines = [f"Mean ± std over {len(r)} seeds ({', '.join(map(str, runs))}).\n",
             "| map | whole map OA % | boundary OA % (<= 2 px) | interior OA % | map s |",
             "|---|---|---|---|---|",
             f"| BDGF teacher (defaults) | {ms([x['teacher']['oa'] for x in r])} | "
             f"{ms([x['teacher']['boundary'] for x in r])} | {ms([x['teacher']['interior'] for x in r])} | "
             f"{ms([x['teacher']['map_s'] for x in r])} |",
             f"| student (`--fast student`) | {ms([x['student']['oa'] for x in r])} | "
             f"{ms([x['student']['boundary'] for x in r])} | {ms([x['student']['interior'] for x in r])} | "
             f"{ms([x['student_map_s'] for x in r])} |",
             "",
             f"Student's pixel agreement with the teacher's map: whole map {ms([x['agreement']['all'] for x in r])} %, "
             f"boundary {ms([x['agreement']['boundary'] for x in r])} %, interior "
             f"{ms([x['agreement']['interior'] for x in r])} %; held-out agreement `distil` reports "
             f"{ms([100 * x['distil']['agreement_held_out'] for x in r])} %. Teacher training "
             f"{ms([x['teacher']['train_s'] for x in r])} s; distillation (teacher labels its windows + student "
             f"fit) {ms([x['distil']['total_s'] for x in r])} s, of which teacher labelling "
             f"{ms([x['distil']['teacher_s'] for x in r])} s.",
             "",
             "| seed | teacher OA % | student OA % | student − teacher (pp) | within 0.5 pp | boundary: teacher / "
             "student % | agreement with teacher % (all / boundary / interior) | held-out agreement % | teacher map s "
             "| distil s | student map s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    diffs = []
    for seed, x in runs.items():
        d = x["student"]["oa"] - x["teacher"]["oa"]
        diffs.append(d)
        ag = x["agreement"]
        lines.append(f"| {seed} | {x['teacher']['oa']:.2f} | {x['student']['oa']:.2f} | {d:+.2f} | "
                     f"{'yes' if abs(d) <= TOLERANCE_PP else 'no'} | {x['teacher']['boundary']:.2f} / "
                     f"{x['student']['boundary']:.2f} | {ag['all']:.2f} / {ag['boundary']:.2f} / {ag['interior']:.2f} | "
                     f"{100 * x['distil']['agreement_held_out']:.2f} | {x['teacher']['map_s']:.1f} | "
                     f"{x['distil']['wall_s']:.1f} | {x['student_map_s']:.2f} |")
    d = np.array(diffs)
    ok = int((np.abs(d) <= TOLERANCE_PP).sum())
    lines += ["", f"Student minus teacher, whole-map OA: {ms(d)} pp (worst seed {d.min():+.2f} pp); "
                  f"{ok} of {len(d)} seeds within {TOLERANCE_PP} pp.", ""]
    return head + "\n".join(lines) + "\n" + classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs="+", default=["standard", "hard"], choices=["standard", "hard"])
    ap.add_argument("--size", type=int, nargs="+", default=[160])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--work", default=str(ROOT / ".bench" / "edges"), help="bench_edges' scenes (read only here)")
    ap.add_argument("--cache", default=str(ROOT / ".bench" / "student"), help="this benchmark's results")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "student.md"))
    ap.add_argument("--window", type=int, default=None, help="distil's window side (default: bdgf_core.student's)")
    ap.add_argument("--cached-only", action="store_true", help="only write the report from the cached seeds")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bdgf_core import student

    WINDOW_ARG[0] = args.window or student.WINDOW
    t_start = time.perf_counter()
    sections = []
    for size in args.size:
        for variant in args.variant:
            scene = Scene(Path(args.work), variant, size)
            store = Path(args.cache) / f"{variant}_{size}"
            runs = {}
            for seed in args.seeds:
                key = f"e{args.epochs}/{seed}{window_tag()}/{scene.fingerprint(seed)}"
                r = cached(store, key, lambda: run_seed(scene, seed, args.epochs, store),
                           args.cached_only)
                if r is None:
                    continue
                runs[seed] = r
                print(f"{variant} {size} seed {seed}: teacher OA {r['teacher']['oa']:.2f}, student OA "
                      f"{r['student']['oa']:.2f} ({r['student']['oa'] - r['teacher']['oa']:+.2f} pp), agreement "
                      f"{r['agreement']['all']:.2f} % (boundary {r['agreement']['boundary']:.2f} %), held-out "
                      f"{100 * r['distil']['agreement_held_out']:.2f} %", flush=True)
            sections.append(section(variant, size, scene, runs, class_table(scene, store, args.epochs, runs)
                                    if runs else ""))
    cmd = " ".join(["python benchmarks/bench_student.py", *sys.argv[1:]])
    text = (f"# The fast student map against its BDGF teacher\n\nCommand: `{cmd}`\n\n"
            f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
            f"{platform.python_version()}, {args.threads} torch thread(s); {time.perf_counter() - t_start:.0f} s for "
            "this invocation (cached seeds are read back, not rerun"
            + ("; this report was written from the cached results of the same command run without "
               "`--cached-only`, the per-seed seconds are from those runs" if args.cached_only else "")
            + "). Load caveat: the machine's 2 cores were "
            "shared with other jobs (a test suite and a demo run) while this ran, so the seconds are upper "
            "bounds, comparable only roughly between rows.\n\n"
            f"What is measured: per scene (embedded synthetic scenes, scene seed 0, `fast` diffusion features) and "
            f"training seed, the default BDGF (`BDGFConfig(epochs={args.epochs}, seed)`, edge-aware patches on) is "
            "trained on 50 pixels per class (polygon split, 10 % validation) and predicts every pixel; the student "
            f"is distilled from it with `distil`'s defaults (16384 sampled pixels in {WINDOW_ARG[0]} x {WINDOW_ARG[0]} "
            "windows, a fifth of the "
            f"windows held out, {student.STEPS} steps, width 64, loss weight 1 + {student.EDGE_WEIGHT:g} on the "
            "teacher's class edges, seed = training seed) and predicts every pixel through "
            "classify's block code. OA is over every pixel against the generator's reference map; boundary = "
            f"within 2 px of another class. The bar: student whole-map OA within {TOLERANCE_PP} pp of its "
            "teacher's.\n\n" + "\n".join(sections))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
