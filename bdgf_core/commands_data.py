"""Data commands: ``import-mat`` (the paper's scenes from their MATLAB files)."""
from __future__ import annotations


def add_data_commands(sub, common) -> None:
    from .matimport import CRS_NOTE, SCENE_CLASSES

    p = sub.add_parser("import-mat", parents=[common],
                       help="import a paper scene (Augsburg, Berlin) from its .mat files as GeoTIFFs",
                       description="Writes spectral.tif, sar.tif, train_labels.tif and test_labels.tif (0 = "
                                   f"unlabelled) into --out-dir. CRS: {CRS_NOTE}.")
    p.add_argument("--hs", required=True, help="hyperspectral cube, e.g. data_HS_LR.mat (height x width x bands)")
    p.add_argument("--sar", required=True, help="SAR image, e.g. data_SAR_HR.mat (height x width x bands)")
    p.add_argument("--train", required=True, help="training labels, e.g. TrainImage.mat (height x width)")
    p.add_argument("--test", required=True, help="test labels, e.g. TestImage.mat (height x width)")
    p.add_argument("--out-dir", required=True, help="folder for the GeoTIFFs (created when missing)")
    p.add_argument("--scene", choices=["auto", *SCENE_CLASSES, "none"], default="auto",
                   help="class names to write into the label rasters (auto: recognised by the image size)")
    from .cli import COMMANDS

    COMMANDS["import-mat"] = cmd_import_mat


def cmd_import_mat(args, rep) -> dict:
    from .matimport import import_scene

    res = import_scene(args.hs, args.sar, args.train, args.test, args.out_dir, args.scene, rep)
    rep.info(f"{res['height']} x {res['width']} pixels, {res['classes']} classes"
             f"{' (' + res['scene'] + ')' if res['scene'] != 'none' else ''}; {res['train_pixels']} training and "
             f"{res['test_pixels']} test pixels; CRS: {res['crs']}")
    rep.info("train with: --groundtruth " + res["train"] + " --test-groundtruth " + res["test"])
    return res
