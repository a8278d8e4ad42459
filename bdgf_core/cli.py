"""The runtime's command line: ``python -m bdgf_core COMMAND [options]``.

Every command reports progress (``--progress json`` for QGIS, a bar in a terminal), exits 0 with a
final result, 1 with a one-line error naming the problem and the fix, 130 when cancelled.
"""
from __future__ import annotations

import argparse
import errno
import os
import datetime as _dt
import platform
import sys
import time
import traceback
import uuid
from pathlib import Path

import numpy as np

from . import __version__, paths, runlog
from .errors import BdgfError, Cancelled
from .progress import Reporter

EXIT_ERROR, EXIT_CANCELLED = 1, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but without the usage dump
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def positive_int(v: str) -> int:
    i = int(v)
    if i <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {v}")
    return i


def odd_patch(v: str) -> int:
    i = int(v)
    if i <= 0 or i % 2 == 0:
        raise argparse.ArgumentTypeError(f"patch size must be odd and positive (1, 3, 5, 7, 9...), got {v}")
    return i


def share(v: str) -> float:
    f = float(v)
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1), got {v}")
    return f


def input_args(q, sar_resampling: str | None = "auto") -> None:
    """--spectral, --sar (one or more files each, stacked band-wise) and --sar-resampling."""
    from .raster import SAR_RESAMPLING

    q.add_argument("--spectral", required=True, nargs="+", metavar="RASTER",
                   help="spectral raster(s), stacked band-wise in the order given, on the first one's grid")
    q.add_argument("--sar", required=True, nargs="+", metavar="RASTER",
                   help="SAR (or other auxiliary) raster(s), e.g. VV and VH, stacked band-wise and resampled "
                        "to the spectral grid")
    q.add_argument("--sar-resampling", choices=SAR_RESAMPLING, default=sar_resampling,
                   help="SAR on another grid: average (block averaging in linear power, dB given back in dB), "
                        "bilinear, or auto (average when the SAR pixels are finer than the spectral grid's, else "
                        "bilinear)" + (" (default: auto)" if sar_resampling else " (default: the model's choice)"))


def class_args(q) -> None:
    """--class-name-field and --unlabelled-value: how a ground truth codes and names its classes."""
    q.add_argument("--class-name-field", default=None,
                   help="polygons with numeric codes: the field with each code's name (default: a field 'name')")
    q.add_argument("--unlabelled-value", type=float, default=None,
                   help="label rasters: the value of unlabelled pixels (default: the raster's nodata value if it "
                        "has one, else 0); every other value, 0 and negatives included, is a class")
    q.add_argument("--class-colors", type=class_colours, default=None, metavar="JSON",
                   help='colours of classes by code or name, e.g. \'{"1": "#1f78b4", "forest": "#33a02c"}\' '
                        "(QGIS passes the ground-truth layer's categorized style)")


def class_colours(text: str) -> dict[str, str]:
    """'{"1": "#1f78b4", ...}' -> {"1": "#1f78b4"}: colours keyed by class code or name."""
    import json
    import re

    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"class colours must be a JSON object such as '{{\"1\": \"#1f78b4\"}}', "
                                         f"got {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(c, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", c)
                                              for c in value.values()):
        raise argparse.ArgumentTypeError("class colours must map codes or names to #rrggbb colours, "
                                         f"got {text!r}")
    return {str(k): v.lower() for k, v in value.items()}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bdgf_core", description="BDGF runtime: land-cover classification from spectral "
                "and SAR rasters (Balanced Diffusion-Guided Fusion) and a random-forest baseline.")
    p.add_argument("--version", action="version", version=f"bdgf_core {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--progress", choices=["auto", "json", "bar", "none"], default="auto",
                        help="json lines (for QGIS), a progress bar, or nothing; auto: a bar in a terminal")

    g = sub.add_parser("generate-scene", parents=[common], help="write the embedded synthetic demo scene")
    g.add_argument("--out-dir", required=True)
    g.add_argument("--size", type=positive_int, default=200)
    g.add_argument("--bands", type=positive_int, default=60)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--variant", choices=["standard", "hard"], default="standard")

    def training_args(q, samples=50, val=0.0):
        input_args(q)
        q.add_argument("--groundtruth", required=True, help="labelled polygons (any OGR source) or a label raster")
        q.add_argument("--layer", default=None, help="layer of the ground-truth source (default: the first)")
        q.add_argument("--class-field", default="class")
        class_args(q)
        q.add_argument("--test-groundtruth", default=None,
                       help="a separate test layer (polygons or a label raster on the grid): the ground truth is then "
                            "used whole for training/validation, this layer for the held-out accuracy")
        q.add_argument("--test-layer", default=None, help="layer of the test ground-truth source (default: the first)")
        q.add_argument("--samples-per-class", type=positive_int, default=samples,
                       help="training pixels drawn per class (from the training side or layer only)")
        q.add_argument("--split", choices=["polygons", "blocks", "pixels"], default="polygons",
                       help="how the test (and validation) pixels are set apart; with --test-groundtruth, how the "
                            "validation pixels are")
        q.add_argument("--block-size", type=positive_int, default=32)
        q.add_argument("--validation-share", type=share, default=val)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--model", required=True, help="model file to write (.bdgf)")
        q.add_argument("--report", default=None, help="HTML training report (a .json twin is written beside it)")

    b = sub.add_parser("train-baseline", parents=[common], help="train the random-forest baseline")
    training_args(b)
    b.add_argument("--trees", type=positive_int, default=200)
    b.add_argument("--features", choices=["pixel", "mean3", "mean9"], default="pixel",
                   help="what the forest sees of each pixel: its own values, or every band's mean over a 3 x 3 or "
                        "9 x 9 window around it (spatial context, as a focal-mean tool gives)")

    c = sub.add_parser("classify", parents=[common], help="classify rasters with a model, block by block")
    c.add_argument("--model", required=True)
    input_args(c, sar_resampling=None)
    c.add_argument("--features", default=None, help="diffusion feature raster (BDGF models)")
    c.add_argument("--diffusion-model", default=None, help="compute the features from this diffusion model")
    c.add_argument("--out", required=True, help="classification map (GeoTIFF)")
    c.add_argument("--confidence", default=None, help="optional raster of the maximum class probability")
    c.add_argument("--entropy", default=None, help="optional raster of the prediction entropy (nats)")
    c.add_argument("--memory-mb", type=positive_int, default=1024,
                   help="memory budget of the run in MB (batches, caches and blocks of rows are sized from it)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    c.add_argument("--fast", choices=["bf16", "student"], default=None,
                   help="BDGF models: a faster map that is not exactly the model's (default: exact). bf16: bfloat16 "
                        "arithmetic on the CPU too (about 1.7x here); student: a compact network distilled from the model on "
                        "this scene, written beside the model and reused (hundreds of times faster; its agreement "
                        "with the model is reported)")
    c.add_argument("--batch-size", type=positive_int, default=None,
                   help="pixels per network batch (BDGF; default: chosen from the memory budget)")

    a = sub.add_parser("assess", parents=[common], help="accuracy of a map against ground truth")
    a.add_argument("--map", required=True)
    a.add_argument("--groundtruth", required=True, help="labelled polygons (any OGR source) or a label raster")
    a.add_argument("--layer", default=None)
    a.add_argument("--class-field", default="class")
    class_args(a)
    a.add_argument("--model", default=None, help="the model that made the map: its training pixels are left out")
    a.add_argument("--report", required=True, help="HTML report")
    a.add_argument("--json", default=None)
    a.add_argument("--csv", default=None)
    a.add_argument("--boundaries", choices=["auto", "on", "off"], default="auto",
                   help="accuracy apart on boundary pixels (near a pixel of another class) and interior pixels; "
                        "auto: when the ground truth is a reference map labelling nearly every pixel (>= 95%%)")
    a.add_argument("--boundary-distance", type=float, default=2.0,
                   help="a boundary pixel lies within this many pixels (Euclidean) of another class (default 2)")

    from .commands_deep import add_deep_commands
    from .commands_data import add_data_commands

    add_deep_commands(sub, common, training_args)
    add_data_commands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    rep = Reporter(mode)
    if int(os.environ.get("RANK", "0") or 0) > 0:  # a non-main torchrun process: errors only
        rep.quiet_rank(int(os.environ["RANK"]))
    rep.install_signal_handlers()
    _faults_startup()
    started = time.time()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and args.command not in ("pretrain", "train", "classify"):
        rep.error(f"'{args.command}' runs in one process; only 'pretrain', 'train' and 'classify' run under torchrun "
                  "so far (run this command without torchrun)")
        return EXIT_ERROR
    try:
        paths.refuse_outputs_over_inputs(args.command, args)
        with _output_locks(args, rep):
            outputs = COMMANDS[args.command](args, rep)
    except Cancelled as exc:
        # Under torchrun the other processes are stopped with SIGTERM when one fails: only rank 0
        # reports a cancel, so the failing rank's message is the one the user sees.
        if rep.rank == 0:
            rep.error(str(exc))
        return EXIT_CANCELLED
    except BdgfError as exc:
        rep.error(str(exc))
        return EXIT_ERROR
    except MemoryError:
        rep.error("out of memory; lower the memory budget, the batch size or the tile size")
        return EXIT_ERROR
    except OSError as exc:
        if exc.errno not in _SPACE_ERRNOS:
            traceback.print_exc(file=sys.stderr)
            rep.error(f"internal error: {type(exc).__name__}: {exc} (please report it with the log)")
            return EXIT_ERROR
        where = f" while writing {exc.filename}" if exc.filename else ""
        rep.error(f"no space left{where} ({exc.strerror}); free some space or choose an output folder on "
                  "another disk")
        return EXIT_ERROR
    except Exception as exc:  # an unexpected failure still ends with one line, the details to stderr
        traceback.print_exc(file=sys.stderr)
        rep.error(f"internal error: {type(exc).__name__}: {exc} (please report it with the log)")
        return EXIT_ERROR
    rep.info(f"done in {time.time() - started:.1f} s")
    log = runlog.log_path(args.command, args)
    if log is not None and rep.rank == 0 and outputs:
        try:
            outputs = {**outputs, "log": str(runlog.write_log(log, runlog.argv_of(argv), rep.messages, outputs,
                                                              time.time() - started))}
        except OSError as exc:  # the outputs are complete: a missing log is not worth failing the run
            rep.warning(f"could not write the run log {log} ({exc})")
    rep.result(outputs)
    return 0


# -- faults (issue 18): the run ends with its parent, one run per output, space errors in one line ---

_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _faults_startup() -> None:
    from .atomic import ignore_file_size_signal
    from .lifeline import install

    ignore_file_size_signal()
    install()


def _output_locks(args, rep: Reporter):
    """Lock the command's outputs (rank 0 alone writes them, so it alone locks)."""
    import contextlib

    from .locks import hold, outputs_of

    if rep.rank:
        return contextlib.nullcontext()
    return hold(outputs_of(args.command, args))


# ---------------------------------------------------------------------------------------------

def cmd_generate_scene(args, rep: Reporter) -> dict:
    from .scene import generate_scene

    rep.progress(0.0, "generating")
    s = generate_scene(args.out_dir, size=args.size, bands=args.bands, seed=args.seed, variant=args.variant)
    rep.progress(1.0)
    return {"spectral": str(s.spectral), "sar": str(s.sar), "groundtruth": str(s.groundtruth),
            "reference": str(s.reference), "class_field": s.class_field}


def run_info(device: str = "cpu") -> dict:
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "bdgf_core": __version__, "python": platform.python_version(), "host": platform.node(),
            "device": device}


def cmd_train_baseline(args, rep: Reporter) -> dict:
    from .atomic import check_writable
    from .baseline import FEATURE_WINDOWS, fit_forest, forest_proba
    from .metrics import assess
    from .modelfile import save_model
    from .samples import features_at, prepare_training

    check_writable(args.model)
    if args.report:
        check_writable(args.report)
    rep.progress(0.0, "reading")
    data = prepare_training(args.spectral, args.sar, args.groundtruth, args.class_field, args.samples_per_class,
                            args.split, args.seed, args.validation_share, args.block_size, rep.sub(0, 0.2), args.layer,
                            args.test_groundtruth, args.test_layer, **ground_truth_options(args))
    labels = data.gt.labels.ravel()
    train = np.concatenate([data.split.train, data.split.val])  # a forest needs no validation set
    stats = (*data.spectral_stats, *data.sar_stats)
    window = FEATURE_WINDOWS[args.features]
    x_train = features_at(data.spectral, data.sar, train, stats, window)
    rep.progress(0.25, f"fitting {args.trees} trees on {train.size} pixels")
    forest = fit_forest(x_train, labels[train], args.trees, args.seed, progress=rep.sub(0.25, 0.8).callback(),
                        cancelled=rep.cancelled)
    rep.progress(0.8, "testing")
    test = data.split.test
    result = {"split": data.split.summary}
    if test.size:
        x_test = features_at(data.spectral, data.sar, test, stats, window)
        yhat = forest["classes"][forest_proba(forest, np.nan_to_num(x_test)).argmax(1)]
        acc = assess(labels[test], yhat, data.codes())
        names = {c.code: c.name for c in data.gt.classes}
        result["test_accuracy"] = acc.to_json(names)
        rep.info(f"held-out test pixels: OA {acc.oa:.2f}%, AA {acc.aa:.2f}%, Kappa {acc.kappa:.2f}%")
    meta = {
        "model_id": uuid.uuid4().hex,
        "classes": [c.to_json() for c in data.gt.classes],
        "inputs": {"spectral_bands": data.spectral.bands, "sar_bands": data.sar.bands, "feature_bands": None,
                   "sar_resampling": args.sar_resampling},
        "grid": data.spectral.grid.to_json(),
        "groundtruth": str(Path(args.groundtruth).resolve()),
        "split": data.split.summary,
        "trees": args.trees, "run": run_info(), "window": window,
        "features": "per-pixel normalised spectral + SAR values" if window == 1 else
                    f"normalised spectral + SAR values, each band's mean over a {window} x {window} window",
    }
    tensors = {f"forest.{k}": v for k, v in forest.items()}
    tensors.update({"spectral_mean": data.spectral_stats[0], "spectral_std": data.spectral_stats[1],
                    "sar_mean": data.sar_stats[0], "sar_std": data.sar_stats[1],
                    "split.train": data.split.train.astype(np.int64), "split.val": data.split.val.astype(np.int64),
                    "split.test": data.split.test.astype(np.int64)})
    save_model(args.model, "baseline", tensors, meta)
    report = write_training_report(args.report, "Random-forest baseline: training report", meta, result, data) \
        if args.report else None
    rep.progress(1.0)
    out = {"model": str(args.model), "report": report, "train_pixels": int(data.split.train.size + data.split.val.size),
           "test_pixels": int(test.size)}
    if "test_accuracy" in result:
        out["test_oa"] = result["test_accuracy"]["oa"]
    return out


def ground_truth_options(args) -> dict:
    """The keyword arguments of prepare_training that say how to read the inputs and the ground truth."""
    return {"sar_resampling": args.sar_resampling, "class_name_field": args.class_name_field,
            "unlabelled_value": args.unlabelled_value, "class_colors": args.class_colors}


def write_training_report(path: str, title: str, meta: dict, result: dict, data, extra_html: str = "") -> str:
    from .report import accuracy_section, split_section, write_html, write_json

    colors = {c["code"]: c["color"] for c in meta["classes"]}
    body = split_section(result.get("split")) + extra_html
    if "test_accuracy" in result:
        body = "<h2>Accuracy on the held-out test pixels</h2>" + accuracy_section(result["test_accuracy"], colors) + body
    body += f"<h2>Run</h2><pre>{_pre(meta.get('run'))}</pre>"
    write_html(path, title, body, subtitle=f"model {meta['model_id']}")
    write_json(Path(path).with_suffix(".json"), {"meta": meta, **result})
    return str(path)


def _pre(obj) -> str:
    import html
    import json

    return html.escape(json.dumps(obj, indent=2))


def cmd_classify(args, rep: Reporter) -> dict:
    """Classify; under torchrun the processes share the scene's blocks of rows (see inference.classify).

    The set-up (model, rasters, checks) runs in every process and ends with a collective status
    check, as every block does: a failure anywhere is reported once, by rank 0, and the other
    processes end quietly with exit 0 (torchrun would otherwise stop rank 0 mid-clean-up).
    """
    from .distributed import PeerFailed, join, run_agreed
    from .inference import classify

    ctx, this_rank_device = join(args.device, rep)  # a device error is raised in setup(), reported by rank 0

    def setup():
        dev = this_rank_device()
        return (*_classify_setup(args, rep, dev), dev)

    try:
        predictor, inputs, classes, meta, dev = run_agreed(setup, ctx)
        rep.info(f"model {Path(args.model).name} ({meta['kind']}), device {dev}"
                 + (f", {ctx.world} processes" if ctx.enabled else ""))
        return classify(predictor, inputs, args.out, classes, args.confidence, args.entropy, args.memory_mb, rep,
                        ctx=ctx)
    except PeerFailed:  # another process failed and rank 0 reports it
        return {}


def _classify_setup(args, rep: Reporter, device: str):
    """(predictor, inputs, classes, model metadata) of a classify run, every input checked."""
    from .atomic import check_writable
    from .inference import Inputs
    from .models import check_inputs, classes_of, load_predictor
    from .raster import any_pixel_with_data
    from .samples import open_inputs

    for p in (args.out, args.confidence, args.entropy):
        if p:
            check_writable(p)
    if args.features and args.diffusion_model:  # the raster is already computed: it wins (as the QGIS help says)
        rep.warning("both a feature raster and a diffusion model were given: the feature raster is used")
        args.diffusion_model = None
    predictor, meta = load_predictor(args.model, device=device, batch_size=args.batch_size)
    if hasattr(predictor, "log"):  # told when an out-of-memory retry lowers the batch
        predictor.log = rep.warning
    # a model made before --sar-resampling was resampled bilinearly
    spec, sar = open_inputs(args.spectral, args.sar, rep,
                            args.sar_resampling or meta["inputs"].get("sar_resampling") or "bilinear")
    feats = diffusion = None
    if meta["kind"] in ("bdgf", "student") and meta["inputs"].get("feature_bands"):
        if args.diffusion_model:
            diffusion = _diffusion_features(args, meta, spec, device, rep)
        else:
            feats = _feature_source(args, meta, spec, rep)
    elif args.features or args.diffusion_model:
        rep.warning("this model does not use diffusion features; --features / --diffusion-model are ignored")
    check_inputs(meta, spec.bands, sar.bands,
                 feats.bands if feats is not None else diffusion.bands if diffusion is not None else None)
    if not any_pixel_with_data([spec, sar]):
        raise BdgfError("the spectral and SAR rasters have no pixel with data in both (all nodata or NaN); "
                        "check their nodata values and that they cover the same area")
    inputs = Inputs(spec, sar, feats, diffusion)
    fast = getattr(args, "fast", None)
    if fast and meta["kind"] != "bdgf":
        rep.warning(f"--fast {fast} applies to BDGF models only; ignored")
    elif fast == "bf16":
        predictor.precision = "bf16"
        rep.info("fast map: bfloat16 arithmetic (not exactly the model's map; docs/DENSE.md)")
    elif fast == "student":
        from .student import student_for

        predictor = student_for(args.model, predictor, inputs, device, rep)
    return predictor, inputs, classes_of(meta), meta


def _feature_source(args, meta, spec, rep):
    from .raster import RasterSource

    if args.features:
        src = RasterSource(args.features, what="diffusion feature raster")
        if not src.grid.same_as(spec.grid):
            raise BdgfError("the diffusion feature raster is on another grid than the spectral raster; give the "
                            "features computed by 'Pretrain DDPM' on this spectral raster")
        return src
    raise BdgfError("this BDGF model needs diffusion features: give the feature raster written by 'Pretrain DDPM' "
                    "(--features) or the diffusion model to compute them from (--diffusion-model)")


def _diffusion_features(args, meta, spec, device, rep):
    """Features computed during classification from the diffusion model the classifier was trained with."""
    from .diffusion import DiffusionModel
    from .inference import DiffusionFeatures
    from .raster import open_raster

    model = DiffusionModel.load(args.diffusion_model, device=device)
    # The training feature raster names the diffusion model that made it: refuse another one.
    trained_on = meta.get("features")
    if trained_on and Path(trained_on).exists():
        made_by = open_raster(trained_on, "diffusion feature raster").GetMetadataItem("BDGF_DIFFUSION_MODEL_ID")
        if made_by and made_by != model.model_id:
            raise BdgfError(f"the classifier was trained on the features of another diffusion model (id {made_by}, "
                            f"features {Path(trained_on).name}), not of {Path(args.diffusion_model).name}; give the "
                            "diffusion model that 'Pretrain DDPM' wrote with those features")
    else:
        rep.info("the training feature raster is not at hand to check that this is the classifier's diffusion model")
    feats = DiffusionFeatures(model, spec.height, spec.width, device)
    rep.info(f"diffusion features computed block by block from {Path(args.diffusion_model).name} "
             f"({feats.bands} channels, halo {feats.halo} px)")
    return feats


def cmd_assess(args, rep: Reporter) -> dict:
    from .atomic import check_writable
    from .groundtruth import ClassInfo, known_classes, load_ground_truth
    from .mapscore import is_full_reference, score_map
    from .metrics import assess
    from .modelfile import load_model
    from .raster import RasterSource
    from .report import accuracy_section, split_section, write_csv, write_html, write_json

    for p in (args.report, args.json, args.csv):
        if p:
            check_writable(p)
    m = RasterSource(args.map, what="classification map")
    tensors, meta = load_model(args.model) if args.model else ({}, {})
    # The model's classes (or the map's categories) give a text class field the codes the map uses.
    known = [ClassInfo(int(c["code"]), c["name"], c["color"]) for c in meta.get("classes", [])] \
        or known_classes(args.map)
    gt = load_ground_truth(args.groundtruth, m.grid, args.class_field, args.layer, classes=known,
                           class_name_field=args.class_name_field, unlabelled_value=args.unlabelled_value)
    classmap = m.read()[0]
    labels = gt.labels.ravel()
    pixels = np.flatnonzero(gt.labelled.ravel())
    summary, note = None, "all labelled pixels of the ground truth"
    names = {c.code: c.name for c in gt.classes}
    colors = {c.code: c.color for c in gt.classes}
    if args.model:
        summary = meta.get("split")
        names.update({c["code"]: c["name"] for c in meta["classes"]})
        colors.update({c["code"]: c["color"] for c in meta["classes"]})
        # The layer the model's test pixels were drawn from: its test layer, or its (split) ground truth.
        held_out = (summary or {}).get("test_groundtruth") or meta.get("groundtruth")
        same_gt = held_out == str(Path(args.groundtruth).resolve())
        if same_gt and "split.test" in tensors and m.grid.same_as(_grid_from(meta["grid"])):
            pixels = np.intersect1d(pixels, tensors["split.test"])
            note = f"the model's held-out test pixels ({summary.get('strategy')} split)"
        else:
            used = np.concatenate([tensors.get("split.train", np.empty(0, np.int64)),
                                   tensors.get("split.val", np.empty(0, np.int64))])
            pixels = np.setdiff1d(pixels, used)
            note = "the labelled pixels of this ground truth, less the model's training pixels"
    pred = classmap.ravel()[pixels]
    ok = np.isfinite(pred)  # the map's nodata is NaN here
    if 0 not in names:  # a map without a nodata value: 0 is no class
        ok &= pred != 0
    if not ok.all():
        rep.warning(f"{int((~ok).sum())} test pixels are nodata in the map and are left out")
    pixels, pred = pixels[ok], pred[ok].astype(np.int64)
    if pixels.size == 0:
        raise BdgfError("no labelled pixel of the ground truth falls on a classified pixel of the map; check that "
                        "the map and the ground truth cover the same area")
    codes = sorted(c.code for c in gt.classes)
    acc = assess(labels[pixels], pred, codes)
    aj = acc.to_json(names)
    rep.info(f"OA {acc.oa:.2f}%  AA {acc.aa:.2f}%  Kappa {acc.kappa:.2f}%  on {pixels.size} pixels ({note})")
    edges = None
    if args.boundaries == "on" or (args.boundaries == "auto" and is_full_reference(gt.labels)):
        scored = np.zeros(labels.size, bool)
        scored[pixels] = True
        ms = score_map(gt.labels, classmap, acc.codes, args.boundary_distance, scored.reshape(gt.labels.shape))
        edges = ms.to_json(names)
        del edges["all"]  # the same pixels as the main accuracy
        rep.info(f"boundary pixels (within {args.boundary_distance:g} px of another class): OA {ms.boundary.oa:.2f}% "
                 f"on {int(ms.boundary.confusion.sum())} pixels; interior pixels: OA {ms.interior.oa:.2f}% on "
                 f"{int(ms.interior.confusion.sum())} pixels; {_pct(ms.error_boundary_share)} of the errors lie on "
                 "boundary pixels")
    body = f"<p>Map <code>{Path(args.map).name}</code>, tested on {note}.</p>" + accuracy_section(aj, colors) \
        + (_boundary_section(aj, edges) if edges else "") + split_section(summary)
    write_html(args.report, "Accuracy assessment", body, subtitle=f"{Path(args.map).name}")
    out = {"report": str(args.report), "json": None, "csv": None,
           "oa": round(acc.oa, 4), "aa": round(acc.aa, 4), "kappa": round(acc.kappa, 4)}
    if edges:
        out["oa_boundary"], out["oa_interior"] = edges["boundary"]["oa"], edges["interior"]["oa"]
        out["boundary_pixels"], out["interior_pixels"] = edges["boundary"]["n"], edges["interior"]["n"]
    if args.json:
        write_json(args.json, {"map": str(args.map), "tested_on": note, "split": summary, **aj,
                               **({"boundaries": edges} if edges else {})})
        out["json"] = str(args.json)
    if args.csv:
        write_csv(args.csv, aj)
        out["csv"] = str(args.csv)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v * 100:.1f}%"


def _boundary_section(aj: dict, edges: dict) -> str:
    """The accuracy over all, boundary and interior pixels, per class, as one HTML table."""
    import html

    rows = {"all pixels": aj, f"boundary pixels (within {edges['boundary_distance_px']:g} px of another class)":
            edges["boundary"], "interior pixels": edges["interior"]}
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    head = "".join(f"<th>{html.escape(c['name'])}</th>" for c in aj["classes"])
    body = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td>{v['n']}</td><td>{f(v['oa'])}</td><td>{f(v['aa'])}"
                   f"</td><td>{f(v['kappa'])}</td>" + "".join(f"<td>{f(c['producers'])}</td>" for c in v["classes"])
                   + "</tr>" for k, v in rows.items())
    return ("<h2>Boundary and interior pixels</h2><p>Pixels near a class edge are where maps blur; ground-truth "
            "polygons that stop short of the edges never test them. Per class: producer's accuracy (%). "
            f"{_pct(edges['errors_on_boundary_share'])} of the errors lie on boundary pixels.</p>"
            f"<table><tr><th class='l'>pixels</th><th>n</th><th>OA</th><th>AA</th><th>Kappa</th>{head}</tr>{body}"
            "</table>")


def _grid_from(g: dict):
    from .raster import Grid

    return Grid(int(g["width"]), int(g["height"]), tuple(g["geotransform"]), g["crs_wkt"])


COMMANDS = {
    "generate-scene": cmd_generate_scene,
    "train-baseline": cmd_train_baseline,
    "classify": cmd_classify,
    "assess": cmd_assess,
}
