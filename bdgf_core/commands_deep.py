"""Commands of the deep model: ``pretrain`` (Pretrain DDPM) and ``train`` (Train BDGF)."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from .errors import BdgfError


def _timesteps(v: str) -> tuple[int, ...]:
    import argparse

    try:
        ts = tuple(int(x) for x in v.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timesteps must be whole numbers separated by commas, got {v!r}") from None
    if not ts or min(ts) < 1:
        raise argparse.ArgumentTypeError(f"timesteps must be positive whole numbers, got {v!r}")
    return ts


def add_deep_commands(sub, common, training_args) -> None:
    from .cli import positive_int

    p = sub.add_parser("pretrain", parents=[common], help="pretrain the diffusion model and write its features")
    p.add_argument("--spectral", required=True)
    p.add_argument("--sar", required=True)
    p.add_argument("--profile", choices=["paper", "quick"], default="paper",
                   help="paper: the reference set-up (GPU); quick: a small model for CPUs")
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
    from .cli import COMMANDS

    COMMANDS["pretrain"] = cmd_pretrain


def read_scene(spec, sar, rep) -> tuple[np.ndarray, np.ndarray]:
    """The whole scene in memory (pretraining and training need random access to it)."""
    need = (spec.bands + sar.bands) * spec.width * spec.height * 4 / 2**30
    rep.info(f"reading the scene ({spec.width} x {spec.height}, {spec.bands} + {sar.bands} bands, {need:.2f} GiB)")
    return spec.read(), sar.read()


def cmd_pretrain(args, rep) -> dict:
    from .atomic import atomic_output, check_writable, partial_path
    from .cli import run_info
    from .devices import resolve_device
    from .diffusion import DiffusionConfig, extract_features, pretrain_ddpm
    from .raster import create_raster
    from .samples import open_inputs

    from osgeo import gdal

    check_writable(args.model)
    check_writable(args.features)
    device = resolve_device(args.device, rep)
    overrides = {k: v for k, v in {"steps": args.steps, "batch": args.batch_size, "tile": args.tile_size,
                                   "timesteps": args.timesteps, "feature_channels": args.feature_channels}.items()
                 if v is not None}
    cfg = DiffusionConfig.from_profile(args.profile, masking=not args.no_masking, speckle=not args.no_speckle,
                                       seed=args.seed, **overrides)
    cfg.validate()
    spec, sar = open_inputs(args.spectral, args.sar, rep)
    spectral, sar_a = read_scene(spec, sar, rep)
    if not (np.isfinite(spectral).all(0) & np.isfinite(sar_a).all(0)).any():
        raise BdgfError("the spectral and SAR rasters have no pixel with data in both; check their nodata values")
    # The checkpoint lives beside the model until the model is written: a rerun resumes from it.
    ckpt = Path(args.model).with_name(f".{Path(args.model).name}.checkpoint")
    if ckpt.exists():
        rep.info(f"resuming from the checkpoint {ckpt.name}")
    rep.info(f"pretraining the diffusion model ({cfg.profile} profile): {cfg.steps} steps, batch {cfg.batch}, "
             f"tiles {cfg.tile}, masking {'on' if cfg.masking else 'off'}, speckle {'on' if cfg.speckle else 'off'}")
    train_rep = rep.sub(0.0, 0.75)
    model = pretrain_ddpm(spectral, sar_a, None, cfg, device, progress=train_rep.callback(),
                          cancelled=rep.cancelled, checkpoint=str(ckpt))
    model.meta_extra = {"run": run_info(device), "source": {"spectral": str(args.spectral), "sar": str(args.sar)},
                        "grid": spec.grid.to_json()}
    model.save(args.model)
    ckpt.unlink(missing_ok=True)
    del spectral, sar_a
    rep.info(f"diffusion model written: {args.model}; computing features ({model.output_channels} channels)")
    feat_rep = rep.sub(0.75, 1.0)

    def read_window(r0, r1, c0, c1):
        return spec.read(r0, r1, c0, c1), sar.read(r0, r1, c0, c1)

    info = model.feature_info()
    names = [f"diffusion feature {i + 1}" for i in range(model.output_channels)]
    with create_raster(args.features, spec.grid, model.output_channels, gdal.GDT_Float32, None, names) as w:
        w.ds.SetMetadataItem("BDGF_DIFFUSION_MODEL_ID", str(model.model_id))
        w.ds.SetMetadataItem("BDGF_DIFFUSION_PROFILE", cfg.profile)
        extract_features(model, read_window, spec.height, spec.width, w.write, tile=cfg.tile, device=device,
                         progress=feat_rep.callback(), cancelled=rep.cancelled)
    return {"model": str(args.model), "features": str(args.features), "feature_channels": int(info.get("channels", model.output_channels))}
