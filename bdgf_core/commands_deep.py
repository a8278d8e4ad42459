"""Commands of the deep model: ``pretrain`` (Pretrain DDPM) and ``train`` (Train BDGF)."""
from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

import numpy as np

from .errors import BdgfError, Cancelled


def _timesteps(v: str) -> tuple[int, ...]:
    import argparse

    try:
        ts = tuple(int(x) for x in v.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timesteps must be whole numbers separated by commas, got {v!r}") from None
    if not ts or min(ts) < 1:
        raise argparse.ArgumentTypeError(f"timesteps must be positive whole numbers, got {v!r}")
    return ts


def _mix_share(v: str) -> float:
    f = float(v)
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1], got {v}")
    return f


def _test_cap(v: str) -> int:
    try:
        i = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels (0: every test pixel), got {v!r}") from None
    if i < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (every test pixel) or a positive number of pixels, got {v}")
    return i


def add_deep_commands(sub, common, training_args) -> None:
    from .cli import input_args, positive_int

    p = sub.add_parser("pretrain", parents=[common], help="pretrain the diffusion model and write its features")
    input_args(p)
    p.add_argument("--profile", choices=["auto", "paper", "fast"], default="auto",
                   help="auto (default): fast on a CPU, paper on CUDA; paper: SpectralDiff's set-up, 30000 steps "
                        "(days on a CPU); fast: a small model for CPUs")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (profile default)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--tile-size", type=positive_int, default=None)
    p.add_argument("--timesteps", type=_timesteps, default=None, help="feature timesteps, e.g. 5,10,50,100,200,400")
    p.add_argument("--feature-channels", type=positive_int, default=None)
    p.add_argument("--no-masking", action="store_true", help="the paper's 'Concatenate Diff' (no modality masking)")
    p.add_argument("--no-speckle", action="store_true", help="Gaussian noise on the SAR too, no gamma speckle")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", required=True, help="diffusion model file to write (.bdgf)")
    p.add_argument("--features", required=True, help="diffusion feature raster to write (GeoTIFF, float32)")
    t = sub.add_parser("train", parents=[common], help="train the BDGF multi-branch network")
    training_args(t, samples=50, val=0.1)
    t.add_argument("--features", default=None, help="diffusion feature raster written by pretrain")
    t.add_argument("--epochs", type=positive_int, default=100)
    t.add_argument("--batch-size", type=positive_int, default=64)
    t.add_argument("--patch-size", type=int, default=9)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--val-cap", type=positive_int, default=200,  # training.VAL_CAP (not imported: no torch here)
                   help="validation pixels scored per epoch: a fixed stratified subset of at most this many "
                        "(default 200)")
    t.add_argument("--test-cap", type=_test_cap, default=2000,  # testsample.TEST_CAP
                   help="held-out test pixels predicted after training: a stratified sample of at most this many, "
                        "the accuracy estimated for all of them with 95%% intervals (default 2000; 0: every one)")
    for name in ("cnn", "transformer", "mamba", "guide-cnn", "guide-transformer", "guide-mamba", "mutual"):
        t.add_argument(f"--no-{name}", action="store_true", help=f"ablation: switch {name} off (Table II)")
    # issue 15's edge switches; unset, they take BDGFConfig's defaults (docs/METHOD.md "Class edges")
    t.add_argument("--centre", action=argparse.BooleanOptionalAction, default=None,
                   help="the centre pixel's own values into the fused head (default: off)")
    t.add_argument("--flips", action=argparse.BooleanOptionalAction, default=None,
                   help="train on flipped and rotated patches (default: off)")
    t.add_argument("--mix-share", type=_mix_share, default=None,
                   help="share of training patches mixed with another class beyond a random line, 0 to 1 "
                        "(default 0; 1 mixes every patch)")
    t.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help="edge-aware patches: neighbours unlike the centre pixel take its values (default: on; "
                        "--no-adaptive is the paper's patch)")
    from .cli import COMMANDS

    COMMANDS["pretrain"] = cmd_pretrain
    COMMANDS["train"] = cmd_train


def read_scene(spec, sar, rep) -> tuple[np.ndarray, np.ndarray]:
    """The whole scene in memory (pretraining and training need random access to it)."""
    need = (spec.bands + sar.bands) * spec.width * spec.height * 4 / 2**30
    rep.info(f"reading the scene ({spec.width} x {spec.height}, {spec.bands} + {sar.bands} bands, {need:.2f} GiB)")
    return spec.read(), sar.read()


def _resumable(exc: Cancelled, ckpt: Path, kept: str, then: str = "") -> Cancelled:
    """The cancel's message, with how to resume when a checkpoint is there to resume from.

    ``kept``: what the checkpoint holds, as the start of a sentence ("The finished epochs are")."""
    if not ckpt.exists():
        return exc
    return Cancelled(f"cancelled by the user; no output was written. {kept} kept in {ckpt.name}: the same "
                     f"command resumes from there{then}")


def cmd_pretrain(args, rep) -> dict:
    """Pretrain the diffusion model, write it and its feature raster.

    Under torchrun every process trains on its slice of each global batch (pretrain_ddpm); rank 0
    alone then computes and writes the features, then the model (the other processes have
    nothing left to do and end, exit status 0: torchrun waits for rank 0, and no collective call
    follows the training, so no process-group timeout can hit a long extraction). The set-up
    (checks, reading the scene) and the resume from the checkpoint end with a collective status
    check: a failure in any process is reported once, by rank 0, and the others end quietly.
    """
    from .atomic import check_writable, checkpoint_path
    from .cli import run_info
    from .diffusion import DiffusionConfig, extract_features, pretrain_ddpm
    from .distributed import PeerFailed, check_batch, join, run_agreed
    from .raster import create_raster
    from .samples import open_inputs

    from osgeo import gdal

    ctx, this_rank_device = join(args.device, rep)  # a device error is raised in setup(), reported by rank 0

    def setup():
        dev = this_rank_device()
        if ctx.is_main:  # only rank 0 writes (other nodes need not see the output folder)
            check_writable(args.model)
            check_writable(args.features)
        overrides = {k: v for k, v in {"steps": args.steps, "batch": args.batch_size, "tile": args.tile_size,
                                       "timesteps": args.timesteps,
                                       "feature_channels": args.feature_channels}.items() if v is not None}
        profile = args.profile
        if profile == "auto":  # 'paper' is 30000 steps: days on a CPU, minutes to hours on a GPU
            profile = "paper" if str(dev).startswith("cuda") else "fast"
            rep.info(f"profile: {profile} (auto: the device is {'CUDA' if profile == 'paper' else 'the CPU'}; "
                     f"{'paper' if profile == 'fast' else 'fast'} can be asked for with --profile)")
        cfg = DiffusionConfig.from_profile(profile, masking=not args.no_masking, speckle=not args.no_speckle,
                                           seed=args.seed, **overrides)
        cfg.validate()
        check_batch(cfg.batch, ctx)
        spec, sar = open_inputs(args.spectral, args.sar, rep, args.sar_resampling)
        spectral, sar_a = read_scene(spec, sar, rep)
        if not (np.isfinite(spectral).all(0) & np.isfinite(sar_a).all(0)).any():
            raise BdgfError("the spectral and SAR rasters have no pixel with data in both; check their nodata values")
        return dev, cfg, spec, sar, spectral, sar_a

    try:
        device, cfg, spec, sar, spectral, sar_a = run_agreed(setup, ctx)
    except PeerFailed:  # another process failed and rank 0 reports it
        return {}
    # The checkpoint lives beside the model until the model is written: a rerun resumes from it.
    # Under torchrun rank 0 reads it and hands its state to the other processes.
    ckpt = checkpoint_path(args.model)
    if ctx.is_main and ckpt.exists():
        rep.info(f"resuming from the checkpoint {ckpt.name}")
    procs = f", {ctx.world} processes (up to {-(-cfg.batch // ctx.world)} tiles each per step)" if ctx.enabled else ""
    rep.info(f"pretraining the diffusion model ({cfg.profile} profile): {cfg.steps} steps, batch {cfg.batch}, "
             f"tiles {cfg.tile}, masking {'on' if cfg.masking else 'off'}, speckle {'on' if cfg.speckle else 'off'}"
             f"{procs}")
    train_rep = rep.sub(0.0, 0.75)
    started = time.perf_counter()
    estimated: dict = {}

    def on_estimate(est: dict) -> None:  # a warning: QGIS shows it, the run log keeps it
        estimated.update(est)
        rep.warning(est["message"])

    try:
        model = pretrain_ddpm(spectral, sar_a, None, cfg, device, progress=train_rep.callback(),
                              cancelled=rep.cancelled, checkpoint=str(ckpt), dist_ctx=ctx, log=rep.warning,
                              estimate=on_estimate if ctx.is_main else None)
    except PeerFailed:  # rank 0 could not resume from the checkpoint, and reports it
        return {}
    except Cancelled as exc:
        raise _resumable(exc, ckpt, "The run so far is") from None
    if not ctx.is_main:  # rank 0 writes the model and computes the features alone
        return {}
    pretrain_s = time.perf_counter() - started
    model.meta_extra.update({"run": {**run_info(device), "processes": ctx.world},
                             "source": {"spectral": [str(p) for p in args.spectral], "sar": [str(p) for p in args.sar],
                                        "sar_resampling": args.sar_resampling},
                             "grid": spec.grid.to_json()})
    cost = model.meta_extra["cost"]
    spectral_in = (f"{model.n_input_spectral} spectral components of {model.n_spectral} bands"
                   if model.n_input_spectral != model.n_spectral else f"{model.n_spectral} spectral")
    rep.info(f"denoiser: {cost['parameters']:,} parameters on {cost['denoiser_bands']} bands "
             f"({model.n_sar} SAR + {spectral_in}, padded); {cost['train_flops_per_pixel'] / 1e6:.2f} MFLOP per training pixel, "
             f"{cost['feature_flops_per_pixel'] / 1e6:.2f} MFLOP per feature pixel ({len(cfg.timesteps)} timesteps); "
             f"pretraining took {pretrain_s:.1f} s")
    del spectral, sar_a
    # The model is written after its features, and the checkpoint removed last: a run cancelled
    # or failing during the extraction leaves neither output, and the same command resumes from
    # the checkpoint at the last step (no pretraining again) to compute the features.
    rep.info(f"computing the features ({model.output_channels} channels)")
    feat_rep = rep.sub(0.75, 1.0)
    started = time.perf_counter()

    def read_window(r0, r1, c0, c1):
        return spec.read(r0, r1, c0, c1), sar.read(r0, r1, c0, c1)

    info = model.feature_info()
    names = [f"diffusion feature {i + 1}" for i in range(model.output_channels)]
    with create_raster(args.features, spec.grid, model.output_channels, gdal.GDT_Float32, None, names) as w:
        w.ds.SetMetadataItem("BDGF_DIFFUSION_MODEL_ID", str(model.model_id))
        w.ds.SetMetadataItem("BDGF_DIFFUSION_PROFILE", cfg.profile)
        w.ds.SetMetadataItem("BDGF_DIFFUSION_FEATURE_FORMAT", str(model.feature_format))
        try:
            extract_features(model, read_window, spec.height, spec.width, w.write, tile=cfg.feature_tile,
                             device=device, progress=feat_rep.callback(), cancelled=rep.cancelled, log=rep.warning)
            # GDAL's flush of the features before the model is written (a cancel during the flush
            # leaves neither): only the features' rename follows the model's
            w.close()
        except Cancelled as exc:
            raise _resumable(exc, ckpt, "The pretrained network is", " and computes the features without pretraining "
                             "again") from None
        model.save(args.model)
    ckpt.unlink(missing_ok=True)
    features_s = time.perf_counter() - started
    rep.info(f"diffusion model written: {args.model}; features written: {args.features} ({features_s:.1f} s)")
    return {"model": str(args.model), "features": str(args.features), "profile": cfg.profile,
            "model_id": str(model.model_id), "feature_channels": int(info.get("channels", model.output_channels)),
            "parameters": int(cost["parameters"]), "train_mflop_per_pixel": round(cost["train_flops_per_pixel"] / 1e6, 3),
            "feature_mflop_per_pixel": round(cost["feature_flops_per_pixel"] / 1e6, 3),
            "pretrain_seconds": round(pretrain_s, 1), "features_seconds": round(features_s, 1),
            "estimated_seconds": round(float(estimated.get("seconds", 0.0)), 1),
            "feature_format": int(model.feature_format), "processes": ctx.world}


def cmd_train(args, rep) -> dict:
    """Train BDGF; under torchrun each process trains on its slice of every batch (fit_bdgf).

    The set-up (checks, samples, rasters) runs in every process and ends with a collective status
    check, as in classify and pretrain: a failure anywhere, the device's included, is reported
    once, by rank 0, and the other processes end quietly. Rank 0 alone tests and writes.
    """
    from .atomic import check_writable, checkpoint_path
    from .cli import ground_truth_options, run_info, write_training_report
    from .distributed import PeerFailed, join, run_agreed
    from .metrics import assess
    from .models import feature_tags_of, outdated_features
    from .modelfile import save_model
    from .network.bdgf import BDGFConfig
    from .normalise import apply
    from .raster import RasterSource
    from .samples import prepare_training
    from .training import fit_bdgf

    ctx, this_rank_device = join(args.device, rep)  # a device error is raised in setup(), reported by rank 0

    def setup():
        dev = this_rank_device()
        if args.patch_size <= 0 or args.patch_size % 2 == 0:
            raise BdgfError(f"the patch size must be odd and positive (1, 3, 5, 7, 9...), got {args.patch_size}")
        if ctx.is_main:  # only rank 0 writes
            check_writable(args.model)
            if args.report:
                check_writable(args.report)
        try:
            cfg = BDGFConfig(patch=args.patch_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             use_cnn=not args.no_cnn, use_transformer=not args.no_transformer,
                             use_mamba=not args.no_mamba, guide_cnn=not args.no_guide_cnn,
                             guide_transformer=not args.no_guide_transformer, guide_mamba=not args.no_guide_mamba,
                             mutual=not args.no_mutual,
                             **{k: v for k, v in {"centre": args.centre, "flips": args.flips,
                                                  "mix_share": args.mix_share,
                                                  "adaptive": args.adaptive}.items() if v is not None})
        except ValueError as exc:
            raise BdgfError(f"{exc}; keep at least one branch on") from None
        from .testsample import draw_test_sample

        data = prepare_training(args.spectral, args.sar, args.groundtruth, args.class_field, args.samples_per_class,
                                args.split, args.seed, args.validation_share, args.block_size, rep.sub(0, 0.05),
                                args.layer, args.test_groundtruth, args.test_layer, **ground_truth_options(args))
        feats = feature_bands = None
        feature_tags: dict = {}
        if cfg.needs_features:
            if not args.features:
                raise BdgfError("diffusion guidance is on but no feature raster was given; run 'Pretrain DDPM' and "
                                "pass its features (--features), or switch the guidance off (--no-guide-cnn "
                                "--no-guide-transformer --no-guide-mamba)")
            fsrc = RasterSource(args.features, what="diffusion feature raster")
            if not fsrc.grid.same_as(data.spectral.grid):
                raise BdgfError("the diffusion feature raster is on another grid than the spectral raster; give the "
                                "features 'Pretrain DDPM' computed on this spectral raster")
            feats = np.nan_to_num(fsrc.read())
            feature_bands = fsrc.bands
            feature_tags = feature_tags_of(args.features)
            if outdated_features(feature_tags):
                rep.warning(outdated_features(feature_tags))
        # the test sample is drawn before training, so that a cap too small for the classes stops the run
        # before its epochs, not after them
        test = data.split.test
        picked = test[draw_test_sample(data.gt.labels.ravel()[test], args.test_cap, args.seed)]
        return dev, cfg, data, feats, feature_bands, feature_tags, picked

    try:
        device, cfg, data, feats, feature_bands, feature_tags, picked = run_agreed(setup, ctx)
    except PeerFailed:  # another process failed and rank 0 reports it
        return {}
    spectral = np.nan_to_num(apply(data.spectral.read(), *data.spectral_stats))
    sar = np.nan_to_num(apply(data.sar.read(), *data.sar_stats))
    codes = data.codes()
    index = {c: i for i, c in enumerate(codes)}
    labels = data.gt.labels.ravel()
    w = data.spectral.width

    def pixels(flat):
        r, c = np.divmod(flat, w)
        return r, c, np.array([index[int(v)] for v in labels[flat]], np.int64)

    val = pixels(data.split.val) if data.split.val.size else None
    test = data.split.test
    rep.info(f"training BDGF ({', '.join(cfg.branches)}; mutual learning {'on' if cfg.mutual else 'off'}) "
             f"for {cfg.epochs} epochs on {data.split.train.size} pixels, device {device}")
    # An epoch checkpoint beside the model until the model is written: rerunning the same command
    # after an interruption resumes from the last finished epoch.
    ckpt = checkpoint_path(args.model)
    if ctx.is_main and ckpt.exists():
        rep.info(f"resuming from the checkpoint {ckpt.name}")
    try:
        net, history = fit_bdgf(spectral, sar, feats, pixels(data.split.train), val, len(codes), cfg, device,
                                progress=rep.sub(0.05, 0.9).callback(), cancelled=rep.cancelled, dist_ctx=ctx,
                                log=rep.warning, checkpoint=str(ckpt), val_cap=args.val_cap)
    except Cancelled as exc:
        raise _resumable(exc, ckpt, "The finished epochs are") from None
    if not ctx.is_main:  # only rank 0 tests and writes
        return {}
    result = {"split": data.split.summary, "history": history}
    if test.size:
        from .testsample import assess_sample, interval
        from .training import predict_pixels

        t0 = time.perf_counter()
        test_rep = rep.sub(0.9, 0.98)
        what = (f"{picked.size} held-out pixels" if picked.size == test.size
                else f"a stratified sample of {picked.size} of the {test.size} held-out pixels")
        try:
            probs = predict_pixels(net, spectral, sar, feats, picked, cfg.patch,
                                   progress=lambda f: test_rep.progress(f, f"testing {what}"),
                                   cancelled=rep.cancelled)
        except Cancelled as exc:
            raise _resumable(exc, ckpt, "The trained epochs are") from None
        history["test_seconds"] = time.perf_counter() - t0
        predicted = np.asarray(codes)[probs.argmax(1)]
        if picked.size == test.size:
            acc = assess(labels[test], predicted, codes)
            rep.info(f"held-out test pixels: OA {acc.oa:.2f}%, AA {acc.aa:.2f}%, Kappa {acc.kappa:.2f}%")
        else:
            acc = assess_sample(labels[picked], predicted, codes, labels[test])
            oa_lo, oa_hi = interval(acc.oa, acc.sample["oa_ci95"])
            aa_lo, aa_hi = interval(acc.aa, acc.sample["aa_ci95"])
            rep.info(f"held-out test pixels, estimated from {what} (--test-cap): OA {acc.oa:.2f}% (95% interval "
                     f"{oa_lo:.2f}-{oa_hi:.2f}), AA {acc.aa:.2f}% ({aa_lo:.2f}-{aa_hi:.2f}), Kappa {acc.kappa:.2f}%; "
                     "every pixel of the map: 'Assess accuracy'")
        result["test_accuracy"] = acc.to_json({c.code: c.name for c in data.gt.classes})
    fit_s, val_s, test_s = (history.get(k, 0.0) for k in ("seconds", "val_seconds", "test_seconds"))
    if fit_s + test_s > 0:  # fit_s includes the validation
        rep.info(f"time: training {fit_s - val_s:.0f} s, validation {val_s:.0f} s, test {test_s:.0f} s "
                 f"(evaluation {100 * (val_s + test_s) / (fit_s + test_s):.0f} % of training and evaluation)")
    meta = {
        "model_id": uuid.uuid4().hex, "classes": [c.to_json() for c in data.gt.classes],
        "inputs": {"spectral_bands": data.spectral.bands, "sar_bands": data.sar.bands, "feature_bands": feature_bands,
                   "sar_resampling": args.sar_resampling,
                   "feature_profile": feature_tags.get("profile") or None,
                   "feature_model_id": feature_tags.get("model_id") or None,
                   "feature_format": feature_tags.get("format") or None},
        "grid": data.spectral.grid.to_json(), "groundtruth": str(Path(args.groundtruth).resolve()),
        "split": data.split.summary, "network": net.meta(), "run": run_info(device),
        "features": str(Path(args.features).resolve()) if args.features else None,
    }
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({"spectral_mean": data.spectral_stats[0], "spectral_std": data.spectral_stats[1],
                    "sar_mean": data.sar_stats[0], "sar_std": data.sar_stats[1],
                    "split.train": data.split.train.astype(np.int64), "split.val": data.split.val.astype(np.int64),
                    "split.test": data.split.test.astype(np.int64)})
    save_model(args.model, "bdgf", tensors, meta)
    ckpt.unlink(missing_ok=True)
    report = None
    if args.report:
        from .report import training_section

        extra = training_section(history)
        report = write_training_report(args.report, "BDGF: training report", meta, result, data, extra)
    rep.progress(1.0)
    out = {"model": str(args.model), "report": report}
    if "test_accuracy" in result:
        out["test_oa"] = result["test_accuracy"]["oa"]
    return out
