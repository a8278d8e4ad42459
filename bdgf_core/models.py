"""Load any model file of this project as a predictor for classification."""
from __future__ import annotations

import os

import numpy as np

from .baseline import ForestPredictor
from .errors import BdgfError
from .groundtruth import ClassInfo
from .modelfile import load_model


def classes_of(meta: dict) -> list[ClassInfo]:
    return [ClassInfo(int(c["code"]), str(c["name"]), str(c["color"])) for c in meta["classes"]]


def load_predictor(path: str | os.PathLike, device: str = "cpu", batch_size: int | None = None):
    """(predictor, metadata) for a classifier model file (baseline or BDGF)."""
    tensors, meta = load_model(path)
    kind = meta["kind"]
    if "checkpoint" in meta:
        raise BdgfError(f"{os.path.basename(path)} is a training checkpoint, not a finished model; rerun the "
                        "training command to resume it and give the model file it writes")
    if kind == "baseline":
        forest = {k[len("forest."):]: v for k, v in tensors.items() if k.startswith("forest.")}
        return ForestPredictor(forest, tensors["spectral_mean"], tensors["spectral_std"],
                               tensors["sar_mean"], tensors["sar_std"], int(meta.get("window", 1))), meta
    if kind == "bdgf":
        from .bdgf_model import BDGFPredictor

        return BDGFPredictor.from_file(tensors, meta, device=device, batch_size=batch_size), meta
    if kind == "student":  # the opt-in fast map (bdgf_core.student), given as the model itself
        from .student import StudentPredictor

        return StudentPredictor.from_file(tensors, meta, device=device), meta
    raise BdgfError(f"{os.path.basename(path)} is a {kind} model, not a classifier; give the model written by "
                    "'Train BDGF' or 'Train random-forest baseline'")


FEATURE_TAGS = {"profile": "BDGF_DIFFUSION_PROFILE", "model_id": "BDGF_DIFFUSION_MODEL_ID",
                "format": "BDGF_DIFFUSION_FEATURE_FORMAT"}


def feature_tags_of(path: str | os.PathLike) -> dict[str, str]:
    """The diffusion profile, model id and feature format that 'Pretrain DDPM' wrote into a feature
    raster's metadata (empty values for rasters written otherwise; format "1" for its rasters
    written before the format tag existed)."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    md = (ds.GetMetadata() or {}) if ds is not None else {}
    tags = {k: md.get(item, "") for k, item in FEATURE_TAGS.items()}
    if tags["model_id"] and not tags["format"]:
        tags["format"] = "1"
    return tags


def outdated_features(tags: dict) -> str | None:
    """A warning when a feature raster holds an older feature format than 'Pretrain DDPM' writes now."""
    from .diffusion.pretrain import FEATURE_FORMAT

    have = tags.get("format") or ""
    if not have.isdigit() or int(have) >= FEATURE_FORMAT:
        return None
    return (f"this diffusion feature raster has feature format {have} (the spectral axis averaged over SAR and "
            f"spectral positions together, before issue 15); 'Pretrain DDPM' now writes format {FEATURE_FORMAT} "
            "(SAR and spectral pooled apart): rerun it for the current features. The BDGF model keeps the "
            "format it was trained on, and classification refuses features of another one")


def check_inputs(meta: dict, spectral_bands: int, sar_bands: int, feature_bands: int | None = None,
                 feature_tags: dict | None = None) -> None:
    """Refuse rasters whose band counts differ from the ones the model was trained on, and diffusion
    features from another diffusion model or profile than the training features (``feature_tags``:
    ``feature_tags_of(path)`` of the feature raster; a model or raster without tags is not checked)."""
    want = meta["inputs"]
    for what, have, need in (("spectral", spectral_bands, want["spectral_bands"]),
                             ("SAR", sar_bands, want["sar_bands"])):
        if have != need:
            raise BdgfError(f"the model was trained on a {what} raster of {need} bands, but this one has {have}; "
                            f"give the {what} raster the model was trained on (or one with the same bands)")
    tags = feature_tags or {}
    need_profile, have_profile = want.get("feature_profile"), tags.get("profile")
    if need_profile and have_profile and have_profile != need_profile:
        raise BdgfError(f"the model was trained on diffusion features of the '{need_profile}' profile, but this "
                        f"feature raster was computed with the '{have_profile}' profile; give the features of the "
                        f"'{need_profile}' diffusion model the BDGF model was trained with "
                        f"(id {want.get('feature_model_id') or 'unknown'}), or train BDGF on these features")
    need_format, have_format = want.get("feature_format"), tags.get("format")
    if need_format and have_format and str(have_format) != str(need_format):
        raise BdgfError(f"the model was trained on diffusion features of format {need_format}, but this feature "
                        f"raster has format {have_format}; give the features the BDGF model was trained with, or "
                        "train BDGF on these features")
    need_id, have_id = want.get("feature_model_id"), tags.get("model_id")
    if need_id and have_id and have_id != need_id:
        raise BdgfError(f"the model was trained on the features of diffusion model {need_id}, but this feature "
                        f"raster comes from diffusion model {have_id}; give the features of diffusion model "
                        f"{need_id}, or train BDGF on these features")
    if feature_bands is not None and want.get("feature_bands") not in (None, feature_bands):
        raise BdgfError(f"the model was trained on {want['feature_bands']} diffusion feature channels, but the "
                        f"feature raster has {feature_bands}; give the features of the model's diffusion model")


def flat_index(meta_tensors: dict, name: str) -> np.ndarray:
    return np.asarray(meta_tensors.get(name, np.empty(0)), np.int64)
