"""Share of a BDGF training run spent on validation, capped and uncapped (issue 16), on the demo scene.

The scene's own split (polygons, 50 pixels per class, validation share 0.1) gives the training and
validation pixels; the diffusion features are random (64 channels: the network's cost is that of
real features). Validation costs the same every epoch, so a few epochs give the share of a longer run.

    .venv/bin/python benchmarks/bench_validation.py --scene demo_out/scene --epochs 1 --caps 500,256,0
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", required=True, help="folder written by generate-scene")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--caps", default="256,0", help="validation caps to compare, 0 = no cap")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from bdgf_core.network import BDGFConfig
    from bdgf_core.normalise import apply
    from bdgf_core.progress import Reporter
    from bdgf_core.samples import prepare_training
    from bdgf_core.training import fit_bdgf

    d = args.scene.rstrip("/") + "/"
    data = prepare_training(d + "spectral.tif", d + "sar.tif", d + "groundtruth.gpkg", "class", 50, "polygons", 0,
                            0.1, 32, Reporter("none"), None, None, None)
    spectral = np.nan_to_num(apply(data.spectral.read(), *data.spectral_stats)).astype(np.float32)
    sar = np.nan_to_num(apply(data.sar.read(), *data.sar_stats)).astype(np.float32)
    feats = np.random.default_rng(0).standard_normal((64, *spectral.shape[1:])).astype(np.float32)
    codes = data.codes()
    index = {c: i for i, c in enumerate(codes)}
    labels, w = data.gt.labels.ravel(), data.spectral.width

    def pixels(flat):
        r, c = np.divmod(flat, w)
        return r, c, np.array([index[int(v)] for v in labels[flat]], np.int64)

    print(f"{data.split.train.size} training, {data.split.val.size} validation pixels, {len(codes)} classes; "
          f"{args.epochs} epochs, device {args.device}")
    print("| cap | pixels scored per epoch | run s | validation s | validation share |")
    print("|---|---|---|---|---|")
    for cap in (int(c) for c in args.caps.split(",")):
        t = time.perf_counter()
        _, h = fit_bdgf(spectral, sar, feats, pixels(data.split.train), pixels(data.split.val), len(codes),
                        BDGFConfig(epochs=args.epochs), args.device, val_cap=cap or None)
        print(f"| {cap or 'none'} | {h['val_pixels']} | {h['seconds']:.1f} | {h['val_seconds']:.1f} | "
              f"{100 * h['val_seconds'] / h['seconds']:.0f} % |  ({time.perf_counter() - t:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
