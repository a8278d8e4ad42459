"""Pre-training of the BDGF diffusion model (paper Section III-A, Algorithm 1).

``pretrain_ddpm`` draws random tiles covering the scene, noises them with ``forward.q_sample``
(Gaussian noise on spectral bands, gamma speckle on SAR bands, adaptive modality masking driven by
the training progress e = step / steps) and fits the U-Net with an L1 loss on the predicted noise,
Adam. Runs are seeded: on CPU the same seed gives the same weights, and a run resumed from its
checkpoint gives the same weights as one that was never interrupted.

Data parallel (torchrun, see bdgf_core/distributed.py): every process draws the same global batch
of tiles and the same random numbers for all of it (timesteps, masks, noise, speckle) from the
same seeded generator, then denoises its slice ``[rank::world]``; the L1 loss is normalised by the
valid pixels of the whole global batch, BatchNorm uses the statistics of the whole global batch,
and DDP sums the slices' gradients. The weights are then those of one process (to float
rounding), whatever the number of processes. Only rank 0 reads/writes the checkpoint and fits
the feature projection.

Out of memory (GPU): a step that does not fit is run again as micro-batches with gradient
accumulation (the micro-batch halves until it fits, bdgf_core.oom); the global batch, its random
numbers, the loss and the single optimizer step per batch stay the same. BatchNorm in the
denoiser can only normalise each micro-batch with that micro-batch's statistics, so the weights
after such a retry are close to, not equal to, those of an unsplit run; the running statistics
(used by the features) are still updated once per step with those of the whole batch.

Input scaling belongs to the model (fitted on a subsample of the training scene, stored in it):
spectral bands min-max scaled to [-1, 1] per band between robust percentiles (clipped); SAR bands
divided by a per-band high percentile (positive values, so multiplicative speckle is meaningful).
A SAR band whose 1st percentile is negative is taken to be in dB and converted to linear power
first (10^(x/10)).

Spectral reduction (``spectral_components`` > 0, the 'fast' profile): the scaled spectral bands
are either projected on their leading principal components, fitted on the same pixel subsample,
each component divided by its 99.5th percentile of |score| and clipped to [-1, 1] ("pca"), or
averaged in groups of adjacent bands ("bins"). The number of components is raised so that
SAR + components fill the U-Net's padded band count (no zero bands). The denoiser then sees
``n_sar + k`` bands instead of ``n_sar + n_spectral``; masking (Algorithm 1) applies to the
components as it does to bands. See docs/DIFFUSION.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..devices import is_out_of_memory
from ..distributed import (SINGLE, DistContext, agree_on_failure, all_ranks_agree, broadcast_object, check_batch,
                           sync_batchnorm)
from ..errors import BdgfError, Cancelled
from ..eta import format_duration, project
from ..modelfile import load_model, read_meta, save_model
from ..oom import OomRetry
from .forward import Schedule, apply_masks, linear_schedule, mask_probability, q_sample
from .unet import ARCHITECTURES, make_denoiser

Progress = Callable[[float, str], None]

_SAR_CLIP = 4.0  # scaled SAR above 4x its 99th percentile is clipped: a few bright targets
_SAMPLE_PIXELS = 200_000  # pixels used to fit the scaling statistics


#: A checkpoint is written at least this often (seconds) during pretraining, whatever checkpoint_every.
CHECKPOINT_SECONDS = 60.0

#: The time of the whole pretraining is estimated after this many steps of the run, or after the
#: first step that ends ESTIMATE_SECONDS after the start (a 'paper' step on a CPU takes minutes).
ESTIMATE_STEPS = 3
ESTIMATE_SECONDS = 10.0


def estimate_pretraining(stamps: list[float], steps: int, device: str) -> dict:
    """The pretraining's total time from the first measured steps of a run.

    ``stamps``: seconds since the run started at the end of each step so far; ``steps``: the
    steps of this run (the first step's one-time costs: :func:`bdgf_core.eta.project`).
    """
    total, rate, per_step = project(stamps, steps)
    return {"seconds": total, "seconds_per_step": rate, "steps": steps, "device": str(device),
            "message": f"estimated pretraining time: {format_duration(total)} ({steps} steps at {per_step} s/step "
                       f"on {device})"}


@dataclass
class DiffusionConfig:
    """Hyper-parameters of the diffusion model; defaults follow the paper / SpectralDiff."""

    T: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02
    widths: tuple[int, ...] = (16, 32, 64, 128)
    time_dim: int = 32
    tile: int = 64
    batch: int = 20
    lr: float = 1e-4
    steps: int = 30000
    masking: bool = True  # "Masking Diff" (True) or "Concatenate Diff" (False)
    speckle: bool = True  # gamma speckle on SAR (True) or Gaussian noise on SAR too (False)
    speckle_scale: float = 1.0  # c: accumulated speckle variance = c (1 - alpha_bar_t)
    mask_max: float = 1.0  # cap on the masking probability tanh(e); 1 = the paper's schedule
    timesteps: tuple[int, ...] = (5, 10, 50, 100, 200, 400)  # 1-based t of the features
    feature_channels: int = 64  # PCA-whitened output channels; 0 = raw pooled channels
    fit_tiles: int = 16  # tiles sampled to fit the feature projection
    fit_pixels: int = 20000  # pixels sampled (over those tiles) to fit it
    checkpoint_every: int = 200
    seed: int = 0
    profile: str = "paper"
    # Speed levers of the 'fast' profile (defaults = the paper's behaviour; see docs/DIFFUSION.md)
    spectral_components: int = 0  # >0: reduce the spectral bands before the denoiser to (at least) this many
    spectral_reduction: str = "pca"  # how: "pca" (principal components of the scene) or "bins" (band means)
    feature_layers: tuple[int, ...] = ()  # decoder layers kept as features (0 = deepest); () = all
    channels_last: bool = False  # channels_last_3d memory format on CPU (faster 3-D convs in training)
    extract_batch: int = 1  # tiles per U-Net forward in feature extraction (>1 selects oneDNN convs on CPU)
    extract_tile: int = 0  # tile size of feature extraction; 0 = the training tile
    # "spectraldiff" (SpectralDiff's denoiser, the 'paper' profile) or "compact" (UNet3D, 'fast');
    # model files written before the field existed are "compact" (see from_dict)
    architecture: str = "compact"
    # How a decoder feature's spectral axis is reduced: "modality" (SAR and spectral positions
    # averaged separately) or "mean" (all positions together, feature format 1, before issue 15)
    feature_pooling: str = "modality"

    @classmethod
    def from_profile(cls, name: str = "paper", **overrides: Any) -> "DiffusionConfig":
        """'paper': the paper's settings; 'fast': the CPU profile chosen by measurement (docs/DIFFUSION.md)."""
        if name not in PROFILES:
            raise BdgfError(f"unknown diffusion profile {name!r}; choose one of {sorted(PROFILES)}")
        return cls(**{**PROFILES[name], "profile": name, **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in _TUPLES:
            d[k] = list(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {**_LEGACY, **{k: v for k, v in d.items() if k in known}}
        for k in _TUPLES:
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)

    def validate(self) -> None:
        if self.T < 1 or not 0 < self.beta_start <= self.beta_end < 1:
            raise BdgfError("diffusion schedule needs T >= 1 and 0 < beta_start <= beta_end < 1")
        if any(not 1 <= t <= self.T for t in self.timesteps):
            raise BdgfError(f"feature timesteps must lie in 1..{self.T}, got {list(self.timesteps)}")
        if self.tile < 4 or self.batch < 1 or self.steps < 0 or self.lr <= 0:
            raise BdgfError("diffusion training needs tile >= 4, batch >= 1, steps >= 0 and lr > 0")
        levels = len(self.widths) - 1
        layers = self.feature_layers
        if any(not 0 <= k < levels for k in layers) or len(set(layers)) != len(layers):
            raise BdgfError(f"feature layers must be distinct decoder levels 0..{levels - 1} (0 = deepest), "
                            f"got {list(self.feature_layers)}")
        if self.spectral_reduction not in ("pca", "bins"):
            raise BdgfError(f"spectral_reduction must be 'pca' or 'bins', got {self.spectral_reduction!r}")
        if self.spectral_components < 0 or self.extract_batch < 1 or self.extract_tile < 0:
            raise BdgfError("spectral_components and extract_tile must be >= 0 and extract_batch >= 1")
        if self.architecture not in ARCHITECTURES:
            raise BdgfError(f"unknown denoiser architecture {self.architecture!r}; choose one of "
                            f"{sorted(ARCHITECTURES)}")
        if self.feature_pooling not in FEATURE_FORMATS:
            raise BdgfError(f"feature_pooling must be one of {sorted(FEATURE_FORMATS)}, got {self.feature_pooling!r}")

    @property
    def feature_tile(self) -> int:
        """Tile size used to extract features (a larger tile means less halo overhead)."""
        return self.extract_tile if self.extract_tile > 0 else self.tile

    @property
    def layers(self) -> tuple[int, ...]:
        """Decoder levels whose concatenations are features, deepest first (0 = deepest)."""
        return tuple(sorted(self.feature_layers)) if self.feature_layers else tuple(range(len(self.widths) - 1))


_TUPLES = ("widths", "timesteps", "feature_layers")

#: Settings of model files written before a field existed: they load and compute what they did.
_LEGACY = {"architecture": "compact", "feature_pooling": "mean"}

#: Feature raster format per pooling (the raster's BDGF_DIFFUSION_FEATURE_FORMAT; no tag = 1).
FEATURE_FORMATS = {"mean": 1, "modality": 2}
FEATURE_FORMAT = FEATURE_FORMATS["modality"]  # what a new model writes

# The profiles. 'paper' is the dataclass defaults with SpectralDiff's denoiser. 'fast' was chosen by
# the measurements in docs/DIFFUSION.md (benchmarks/bench_profiles.py): the spectral PCA and the
# slimmer, shallower network cut the denoiser's FLOPs per pixel; two timesteps (10, 100, the
# best pair of the sweep over t and decoder layer) cut extraction; channels_last and batched
# extraction use oneDNN's kernels.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(architecture="spectraldiff"),
    "fast": dict(widths=(8, 16, 32), spectral_components=6, tile=32, batch=8, lr=1e-3, steps=300,
                 timesteps=(10, 100), feature_layers=(), feature_channels=32, fit_tiles=8, fit_pixels=5000,
                 channels_last=True, extract_batch=4, extract_tile=96),
}


def padded_bands(n: int, multiple: int) -> int:
    """Merged band count padded up to a multiple of ``multiple`` (zero bands), at least one multiple."""
    return max(multiple, -(-n // multiple) * multiple)


class DiffusionModel:
    """The trained U-Net with its config, input scaling statistics and feature projection."""

    def __init__(self, config: DiffusionConfig, n_spectral: int, n_sar: int, scaling: dict,
                 net: nn.Module | None = None, projection: dict[str, np.ndarray] | None = None,
                 model_id: str | None = None) -> None:
        self.config = config
        self.n_spectral = int(n_spectral)
        self.n_sar = int(n_sar)
        self.scaling = {k: np.asarray(v, dtype=np.float64) for k, v in scaling.items()}
        self.net = net if net is not None else make_denoiser(config.architecture, config.widths, config.time_dim)
        self.projection = projection  # {"mean", "std", "components"} or None
        self.model_id = model_id or uuid.uuid4().hex
        self.meta_extra: dict = {}  # run information the caller records in the model file
        self.schedule: Schedule = linear_schedule(config.T, config.beta_start, config.beta_end)

    @property
    def n_input_spectral(self) -> int:
        """Spectral channels the denoiser sees: the bands, their principal components or band bins."""
        if "pca_components" in self.scaling:
            return int(self.scaling["pca_components"].shape[1])
        if "bin_edges" in self.scaling:
            return int(self.scaling["bin_edges"].shape[0] - 1)
        return self.n_spectral

    @property
    def n_bands(self) -> int:
        """Merged channels fed to the denoiser (SAR first), before padding."""
        return self.n_sar + self.n_input_spectral

    @property
    def n_padded(self) -> int:
        return padded_bands(self.n_bands, self.net.band_multiple)

    # -- input scaling ------------------------------------------------------------------------
    def scale(self, spectral: np.ndarray, sar: np.ndarray) -> np.ndarray:
        """Raw (Bs, h, w) spectral and (Ba, h, w) SAR -> merged (Ba + Bs, h, w) float32, SAR first (eq. 8)."""
        spectral = np.asarray(spectral, dtype=np.float32)
        sar = np.asarray(sar, dtype=np.float32)
        if spectral.shape[0] != self.n_spectral or sar.shape[0] != self.n_sar:
            raise BdgfError(f"the diffusion model was trained on {self.n_spectral} spectral and {self.n_sar} "
                            f"SAR bands, got {spectral.shape[0]} and {sar.shape[0]}; give the same sensors")
        lo = self.scaling["spe_lo"][:, None, None]
        hi = self.scaling["spe_hi"][:, None, None]
        spe = np.clip(2.0 * (spectral - lo) / (hi - lo) - 1.0, -1.0, 1.0)
        if "pca_components" in self.scaling:  # spectral reduction: leading principal components
            spe = _pca_scores(spe, self.scaling)
        elif "bin_edges" in self.scaling:  # spectral reduction: means of adjacent scaled bands
            e = self.scaling["bin_edges"].astype(int)
            spe = np.stack([spe[a:b].mean(0) for a, b in zip(e[:-1], e[1:])])
        sa = np.empty(sar.shape, dtype=np.float32)
        with np.errstate(all="ignore"):
            for b in range(self.n_sar):
                lin = 10.0 ** (sar[b] / 10.0) if self.scaling["sar_db"][b] > 0 else sar[b]  # dB -> power
                sa[b] = np.clip(lin / self.scaling["sar_scale"][b], 0.0, _SAR_CLIP)
        out = np.concatenate([sa, spe]).astype(np.float32)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)  # nodata -> 0

    def net_input(self, x: torch.Tensor) -> torch.Tensor:
        """Merged (N, C, h, w) -> network input (N, 1, S, h, w) with zero padding bands."""
        pad = self.n_padded - x.shape[1]
        return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))[:, None]

    # -- features description -------------------------------------------------------------------
    @property
    def feature_layer_channels(self) -> list[int]:
        """Channels of the decoder layers kept as features, deepest first."""
        return [self.net.feature_channels[k] for k in self.config.layers]

    @property
    def feature_groups(self) -> list[str]:
        """The groups of spectral-axis positions each decoder feature is averaged over, in channel order."""
        if self.config.feature_pooling == "mean":
            return ["all"]
        return [g for g, n in (("sar", self.n_sar), ("spectral", self.n_input_spectral)) if n > 0]

    @property
    def feature_format(self) -> int:
        """Version of the features' layout (FEATURE_FORMATS), written into the feature raster."""
        return FEATURE_FORMATS[self.config.feature_pooling]

    def pool_weights(self, k: int) -> torch.Tensor:
        """Averaging weights (groups, S_k) over the spectral axis of decoder feature k (0 = deepest).

        Position j of a feature downsampled s times stands for the input bands j*s ... (j+1)*s - 1
        (SAR first, then spectral, then zero padding). 'modality': each group's weight of j is the
        number of its bands among those, so SAR and spectral positions are averaged apart and the
        padding takes no part (the spectral positions far outnumber the SAR ones: a plain mean
        would drown the SAR). 'mean': every position alike (format 1).
        """
        stride = self.net.feature_strides[k]
        size = self.n_padded // stride
        if self.config.feature_pooling == "mean":
            return torch.full((1, size), 1.0 / size)
        band = torch.arange(self.n_padded)
        spans = {"sar": band < self.n_sar, "spectral": (band >= self.n_sar) & (band < self.n_bands)}
        w = torch.stack([spans[g].reshape(size, stride).sum(1).float() for g in self.feature_groups])
        return w / w.sum(1, keepdim=True)

    @property
    def raw_feature_channels(self) -> int:
        return len(self.config.timesteps) * len(self.feature_groups) * sum(self.feature_layer_channels)

    @property
    def output_channels(self) -> int:
        return self.raw_feature_channels if self.projection is None else int(self.projection["components"].shape[1])

    def feature_info(self) -> dict:
        """What extract_features writes: channel count and meaning (stored in model metadata)."""
        if self.config.feature_pooling == "mean":
            pooled = "spectral-axis mean"
        else:
            pooled = f"spectral-axis means over the {' and the '.join(self.feature_groups)} positions (group-major)"
        raw = (f"{pooled} of the decoder concatenations (channels {self.feature_layer_channels}, "
               f"deepest first) at t = {list(self.config.timesteps)}, timestep-major")
        if self.projection is not None:
            raw = f"PCA-whitened principal components (largest variance first) of the standardised {raw}"
        return {"channels": self.output_channels, "raw_channels": self.raw_feature_channels,
                "timesteps": list(self.config.timesteps), "layers": self.feature_layer_channels,
                "groups": self.feature_groups, "format": self.feature_format,
                "profile": self.config.profile, "model_id": self.model_id, "meaning": raw}

    # -- files ------------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"profile": self.config.profile, "model_id": self.model_id, "n_spectral": self.n_spectral,
                "n_sar": self.n_sar, "n_input_spectral": self.n_input_spectral,
                "n_bands_padded": self.n_padded, "band_order": "sar,spectral",
                "config": self.config.to_dict(),
                "scaling": {k: v.tolist() for k, v in self.scaling.items()},
                "features": self.feature_info(), **self.meta_extra}

    def _tensors(self) -> dict[str, Any]:
        tensors: dict[str, Any] = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.projection is not None:
            tensors.update({f"projection.{k}": v for k, v in self.projection.items()})
        return tensors

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model file (safetensors + JSON metadata, kind 'diffusion'), atomically."""
        return save_model(path, "diffusion", self._tensors(), self._meta())

    def cost(self, tile: int | None = None) -> dict:
        """Parameters and FLOPs per pixel of this model (``cost.model_cost``)."""
        from .cost import model_cost

        return model_cost(self, tile)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> "DiffusionModel":
        tensors, meta = load_model(path, "diffusion")
        if "checkpoint" in meta:
            raise BdgfError(f"{Path(path).name} is a training checkpoint, not a finished diffusion model; "
                            "resume the pre-training with it or give the model file it wrote")
        return cls._from_parts(tensors, meta, device)

    @classmethod
    def _from_parts(cls, tensors: dict[str, np.ndarray], meta: dict, device: str) -> "DiffusionModel":
        try:
            config = DiffusionConfig.from_dict(meta["config"])
            config.validate()
            net = make_denoiser(config.architecture, config.widths, config.time_dim)
            state = {k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")}
            net.load_state_dict(state)
            proj = {k[11:]: np.array(v) for k, v in tensors.items() if k.startswith("projection.")} or None
            model = cls(config, meta["n_spectral"], meta["n_sar"], meta["scaling"], net, proj, meta["model_id"])
        except BdgfError as exc:
            raise BdgfError(f"the diffusion model file asks for settings this version does not know ({exc}); "
                            "pretrain it again with this version") from None
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise BdgfError(f"the diffusion model file is inconsistent ({exc}); train it again") from None
        model.net.to(device)
        return model


# ---------------------------------------------------------------------------------------------
# Scaling statistics

def fit_scaling(spectral: np.ndarray, sar: np.ndarray, valid: np.ndarray, seed: int,
                components: int = 0, reduction: str = "pca") -> dict[str, np.ndarray]:
    """Per-band robust statistics from a random subsample of valid pixels.

    components > 0 also sets up the spectral reduction: "pca" fits it on the same subsample
    (``pca_mean`` (Bs,), ``pca_components`` (Bs, k), ``pca_scale`` (k,)); "bins" stores the
    ``bin_edges`` (k + 1,) of k groups of adjacent bands. See the module docstring.
    """
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        raise BdgfError("the scene has no valid pixel (all nodata); give a scene with data")
    rng = np.random.default_rng(seed)
    if rows.size > _SAMPLE_PIXELS:
        pick = rng.choice(rows.size, _SAMPLE_PIXELS, replace=False)
        rows, cols = rows[pick], cols[pick]
    with np.errstate(all="ignore"):
        spe = spectral[:, rows, cols].astype(np.float64)
        lo = np.nanpercentile(spe, 0.5, axis=1) if spe.size else np.zeros(0)
        hi = np.nanpercentile(spe, 99.5, axis=1) if spe.size else np.zeros(0)
        sa = sar[:, rows, cols].astype(np.float64)
        db = (np.nanpercentile(sa, 1.0, axis=1) < 0) if sa.size else np.zeros(0, bool)
        lin = np.where(db[:, None], 10.0 ** (sa / 10.0), sa)
        scale = np.nanpercentile(lin, 99.0, axis=1) if sa.size else np.zeros(0)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    hi = np.where(hi - lo > 1e-12, hi, lo + 1.0)  # constant band: any range works
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    out = {"spe_lo": lo, "spe_hi": hi, "sar_scale": scale, "sar_db": db.astype(np.float64)}
    if components > 0 and reduction == "bins":
        out["bin_edges"] = np.array([round(i * spectral.shape[0] / components) for i in range(components + 1)],
                                    dtype=np.float64)
    elif components > 0:
        out.update(_fit_pca(np.clip(2.0 * (spe - lo[:, None]) / (hi - lo)[:, None] - 1.0, -1.0, 1.0), components))
    return out


def _fit_pca(spe: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Leading k principal components of scaled spectral pixels (Bs, n); deterministic signs."""
    x = spe[:, np.isfinite(spe).all(0)].T  # (n, Bs)
    if x.shape[0] < 2:
        raise BdgfError("too few valid pixels to fit the spectral reduction; give a scene with data")
    mean = x.mean(0)
    xc = x - mean
    vals, vecs = np.linalg.eigh(xc.T @ xc / (x.shape[0] - 1))
    vecs = vecs[:, ::-1][:, :k]  # largest variance first
    if vecs.shape[1] < k:  # fewer bands than components: pad with zero components
        vecs = np.pad(vecs, ((0, 0), (0, k - vecs.shape[1])))
    sign = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
    vecs = vecs * np.where(sign == 0, 1.0, sign)
    scores = xc @ vecs
    scale = np.percentile(np.abs(scores), 99.5, axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    return {"pca_mean": mean, "pca_components": vecs, "pca_scale": scale}


def _pca_scores(spe: np.ndarray, scaling: dict[str, np.ndarray]) -> np.ndarray:
    """Scaled spectral bands (Bs, h, w) -> scaled principal components (k, h, w) in [-1, 1]."""
    comps = (scaling["pca_components"] / scaling["pca_scale"][None]).astype(np.float32)
    centred = spe - scaling["pca_mean"].astype(np.float32)[:, None, None]
    z = np.tensordot(comps.T, centred, axes=1)
    return np.clip(z, -1.0, 1.0)


def spectral_components(config: DiffusionConfig, n_spectral: int, n_sar: int) -> int:
    """Components of the spectral reduction (0 = none): at least the configured number, raised to
    fill the padded band count, at most the number of bands (one band: no reduction)."""
    if config.spectral_components <= 0:
        return 0
    target = padded_bands(n_sar + config.spectral_components, 2 ** (len(config.widths) - 1)) - n_sar
    return max(1, min(target, n_spectral))


# ---------------------------------------------------------------------------------------------
# Training

def _tile_positions(valid: np.ndarray, tile: int) -> np.ndarray:
    """Top-left corners of tiles that are mostly valid (more than half; else any valid pixel)."""
    ii = np.pad(valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = ii[tile:, tile:] - ii[:-tile, tile:] - ii[tile:, :-tile] + ii[:-tile, :-tile]
    for need in (tile * tile // 2 + 1, 1):
        r, c = np.nonzero(counts >= need)
        if r.size:
            return np.stack([r, c], 1)
    raise BdgfError("the scene has no valid pixel (all nodata); give a scene with data")


def _checkpoint_tensors(model: DiffusionModel, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict:
    tensors = model._tensors()
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).reshape(-1) if torch.as_tensor(v).dim() == 0 else v
    tensors["rng"] = gen.get_state()
    return tensors


def _fingerprint(config: DiffusionConfig, model: DiffusionModel) -> str:
    cfg = config.to_dict()
    cfg.pop("checkpoint_every")
    return json.dumps({"config": cfg, "n": [model.n_spectral, model.n_sar],
                       "scaling": {k: v.tolist() for k, v in model.scaling.items()}}, sort_keys=True)


def _save_checkpoint(path: str, model: DiffusionModel, opt: torch.optim.Optimizer, gen: torch.Generator,
                     step: int) -> None:
    meta = model._meta()
    meta["checkpoint"] = {"step": step, "fingerprint": _fingerprint(model.config, model)}
    save_model(path, "diffusion", _checkpoint_tensors(model, opt, gen), meta)


def _load_checkpoint(path: str, model: DiffusionModel, opt: torch.optim.Optimizer, gen: torch.Generator) -> int:
    meta = read_meta(path)
    ck = meta.get("checkpoint")
    if ck is None or ck.get("fingerprint") != _fingerprint(model.config, model):
        raise BdgfError(f"the checkpoint {Path(path).resolve()} belongs to another scene or other settings (a "
                        "pretraining stopped earlier); delete it to start afresh, or rerun with that run's settings")
    tensors, _ = load_model(path, "diffusion")
    model.net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                               if k.startswith("net.")})
    ref = opt.state_dict()
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            t = torch.from_numpy(np.array(v))
            state.setdefault(int(i), {})[k] = t.reshape(()) if k == "step" else t
    opt.load_state_dict({"state": state, "param_groups": ref["param_groups"]})
    gen.set_state(torch.from_numpy(np.array(tensors["rng"])))
    return int(ck["step"])


def _cpu(obj: Any) -> Any:
    """Tensors of a (nested) state dict moved to the CPU, for pickling to other processes."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _share_resume_state(model: DiffusionModel, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
                        ctx: DistContext) -> int:
    """Under torchrun: rank 0 (which alone read the checkpoint, possibly on its node only) hands the
    step, weights, optimizer and generator states to every process; returns the step."""
    if not ctx.enabled:
        return step
    state = None
    if ctx.is_main:
        state = {"step": step}
        if step:
            state.update(net=_cpu(model.net.state_dict()), opt=_cpu(opt.state_dict()), rng=gen.get_state())
    state = broadcast_object(state, ctx)
    if not ctx.is_main and state["step"]:
        model.net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])  # Adam moves the state to its parameters' device
        gen.set_state(state["rng"])
    return int(state["step"])


class _BatchNormStep:
    """BatchNorm running statistics across the attempts and micro-batches of one optimisation step.

    ``restore()`` undoes what a failed (out-of-memory) attempt did to them. While ``collect()`` is
    active each BatchNorm input is summed per channel; ``commit()`` then sets the running statistics
    to one momentum update with the mean and unbiased variance of the whole batch, as a single
    forward pass of it does (instead of one update per micro-batch).
    """

    def __init__(self, net: nn.Module) -> None:
        self.bns = [m for m in net.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                      for m in self.bns]
        self.sums: list[list] = []

    def restore(self) -> None:
        with torch.no_grad():
            for m, (mean, var, n) in zip(self.bns, self.saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)

    @contextlib.contextmanager
    def collect(self):
        self.sums = [[0.0, 0.0, 0] for _ in self.bns]

        def hook(k: int):
            def pre(module: nn.Module, inputs: tuple) -> None:
                x = inputs[0].detach().double()
                dims = [0] + list(range(2, x.dim()))
                acc = self.sums[k]
                acc[0] = acc[0] + x.sum(dims)
                acc[1] = acc[1] + (x * x).sum(dims)
                acc[2] += x.numel() // x.shape[1]
            return pre

        handles = [m.register_forward_pre_hook(hook(k)) for k, m in enumerate(self.bns)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def commit(self) -> None:
        self.restore()
        with torch.no_grad():
            for m, (s1, s2, n) in zip(self.bns, self.sums):
                if not n:
                    continue
                mean = s1 / n
                var = (s2 / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))  # unbiased, as BatchNorm keeps
                m.num_batches_tracked.add_(1)
                f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
                m.running_mean.mul_(1 - f).add_(f * mean.to(m.running_mean.dtype))
                m.running_var.mul_(1 - f).add_(f * var.to(m.running_var.dtype))


class _MicroBatchRetry(OomRetry):
    """OomRetry of a pretraining step over its micro-batch size, with the pretraining's fix in the message."""

    def __init__(self, batch: int, device: str, tile: int, log: Callable[[str], None] | None) -> None:
        super().__init__(batch, 1, device, log, "diffusion pretraining")
        self.tile = tile

    def message(self) -> str:
        where = "GPU out of memory" if self.device.startswith("cuda") else "out of memory"
        fix = "use --device cpu" if self.device.startswith("cuda") else "close other programs"
        return (f"{where} in diffusion pretraining even with micro-batches of {self.batch} tile of "
                f"{self.tile} x {self.tile} pixels; lower --tile-size, use the 'fast' profile or {fix}")


def pretrain_ddpm(spectral: np.ndarray, sar: np.ndarray, valid: np.ndarray | None = None,
                  config: DiffusionConfig | None = None, device: str = "cpu",
                  progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                  checkpoint: str | None = None, dist_ctx: DistContext | None = None,
                  log: Callable[[str], None] | None = None,
                  estimate: Callable[[dict], None] | None = None) -> DiffusionModel:
    """Pre-train the diffusion model on one scene; see the module docstring.

    spectral (Bs, H, W) and sar (Ba, H, W) are raw float32 on the same grid; valid (H, W) marks
    pixels with data (None: all finite pixels). ``checkpoint``: a file written every
    ``config.checkpoint_every`` steps, at least every CHECKPOINT_SECONDS, after the last step and
    when cancelled between steps; if it exists the run resumes from it.
    Ends by fitting the feature projection (when ``config.feature_channels`` > 0). The
    checkpoint is also written after the last step and left in place (resuming from it at
    step == steps just refits the projection); the caller deletes it once its outputs are written.
    Mixed precision (bf16, else fp16 with loss scaling) only on CUDA; the GradScaler state is not
    checkpointed (CPU runs are the exact ones).

    ``dist_ctx`` (torchrun, from :func:`bdgf_core.distributed.context`): data-parallel training of
    the same global batch (see the module docstring). Rank 0 alone reads and writes the
    checkpoint and fits the projection: the other ranks return a model without projection, to be
    discarded. ``log`` (e.g. ``Reporter.warning``) is told when a step falls back to micro-batches.
    ``estimate`` receives :func:`estimate_pretraining`'s dict once, after the first few steps of
    the run (ESTIMATE_STEPS, or ESTIMATE_SECONDS): they are measured, not extra.
    """
    config = config or DiffusionConfig.from_profile("paper")
    config.validate()
    ctx = dist_ctx or SINGLE
    check_batch(config.batch, ctx)
    spectral = np.asarray(spectral, dtype=np.float32)
    sar = np.asarray(sar, dtype=np.float32)
    if spectral.ndim != 3 or sar.ndim != 3 or spectral.shape[1:] != sar.shape[1:]:
        raise BdgfError(f"spectral {spectral.shape} and SAR {sar.shape} must be (bands, H, W) on the same grid")
    H, W = spectral.shape[1:]
    finite = np.isfinite(spectral).all(0) & np.isfinite(sar).all(0)
    valid = finite if valid is None else (np.asarray(valid, bool) & finite)
    with torch.random.fork_rng(devices=[]):  # seeded weight initialisation, caller's RNG untouched
        torch.manual_seed(config.seed)
        k = spectral_components(config, spectral.shape[0], sar.shape[0])
        model = DiffusionModel(config, spectral.shape[0], sar.shape[0],
                               fit_scaling(spectral, sar, valid, config.seed, k, config.spectral_reduction))
    scene = model.scale(spectral, sar)
    # Small scenes: pad (reflect) up to one tile; padded pixels take no part in the loss.
    ph, pw = max(0, config.tile - H), max(0, config.tile - W)
    if ph or pw:
        scene = np.pad(scene, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
        valid = np.pad(valid, ((0, ph), (0, pw)))
    positions = torch.from_numpy(_tile_positions(valid, config.tile))
    scene_t, valid_t = torch.from_numpy(scene), torch.from_numpy(valid)

    fmt = torch.channels_last_3d if config.channels_last else torch.contiguous_format
    net = model.net.to(device)
    if ctx.enabled:  # BatchNorm over the whole global batch (parameter names unchanged)
        net = model.net = sync_batchnorm(net, device)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    gen = torch.Generator(device=device).manual_seed(config.seed)  # the same on every rank: same global batch
    cuda = str(device).startswith("cuda")
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    step, failure = 0, None
    if checkpoint and ctx.is_main and Path(checkpoint).is_file():
        try:
            step = _load_checkpoint(checkpoint, model, opt, gen)
        except Exception as exc:  # noqa: BLE001 - under torchrun rank 0 tells, the others learn it
            failure = exc
    agree_on_failure(failure, ctx)  # a refused checkpoint: raised on rank 0, PeerFailed on the others
    step = _share_resume_state(model, opt, gen, step, ctx)
    net.to(memory_format=fmt)  # in place: the optimizer keeps the same parameters
    forward = net
    if ctx.enabled:
        forward = nn.parallel.DistributedDataParallel(net, device_ids=[torch.device(device).index] if cuda else None)
        # channels_last_3d: DDP's bucket of the (1, C, 1, 1, 1) output conv has other (equivalent)
        # strides than its gradient; a performance hint about C numbers, not worth a warning to users.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    started = time.perf_counter()
    first_step = step
    saved_at = started
    stamps: list[float] | None = []  # end of each step of this run, seconds since started (for ``estimate``)
    C, n_sar, n_spe, tile = model.n_bands, model.n_sar, model.n_input_spectral, config.tile
    speckle_c = config.speckle_scale if config.speckle else None
    n_local = len(range(ctx.rank, config.batch, ctx.world))  # this rank's share of the global batch
    # One process: on out-of-memory the step is split into micro-batches. Under torchrun a rank
    # cannot retry alone (the others wait in the BatchNorm and gradient all-reduces): it stops.
    retry = None if ctx.enabled else _MicroBatchRetry(
        n_local, str(device), tile,
        None if log is None else lambda m: log(f"{m} (micro-batches with gradient accumulation: "
                                               f"each step still uses all {config.batch} tiles)"))

    def run_step(x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor, w: torch.Tensor,
                 denom: torch.Tensor, micro: int, bn: _BatchNormStep | None) -> torch.Tensor:
        """Forward and backward of this rank's tiles in micro-batches of ``micro``; the summed loss."""
        if bn is not None:
            bn.restore()  # a failed attempt may have moved the running statistics
        opt.zero_grad(set_to_none=True)
        n = x_t.shape[0]
        split = micro < n
        total = torch.zeros((), device=x_t.device)
        with (bn.collect() if split else contextlib.nullcontext()):
            for s in range(0, n, micro):
                e = min(s + micro, n)
                with torch.autocast("cuda", dtype=amp_dtype, enabled=cuda):
                    pred = forward(model.net_input(x_t[s:e]).contiguous(memory_format=fmt), t[s:e])[:, 0, :C]
                err = (pred.float() - target[s:e]).abs() * w[s:e]  # L1 on the predicted noise, valid pixels only
                part = err.sum() / denom  # this part's share of the global batch's mean
                # DDP averages the ranks' gradients: x world makes it their sum, the global mean's gradient
                scaler.scale(part * ctx.world if ctx.enabled else part).backward()
                total = total + part.detach()
        if split:
            bn.commit()
        return total

    while step < config.steps:
        stop = cancelled is not None and cancelled()
        if ctx.enabled:  # one process cancelled: all stop at the same step
            stop = not all_ranks_agree(not stop, ctx)
        if stop:
            if checkpoint and ctx.is_main:
                _save_checkpoint(checkpoint, model, opt, gen, step)
            raise Cancelled()
        # Every rank draws the whole global batch and all its random numbers, then keeps its slice.
        pick = torch.randint(len(positions), (config.batch,), generator=gen, device=device).cpu()
        x0 = torch.stack([scene_t[:, r:r + tile, c:c + tile] for r, c in positions[pick].tolist()]).to(device)
        w = torch.stack([valid_t[r:r + tile, c:c + tile] for r, c in positions[pick].tolist()])
        w = w[:, None].to(device=device, dtype=torch.float32)
        t = torch.randint(1, config.T + 1, (config.batch,), generator=gen, device=device)  # Alg. 1: sample t
        if config.masking:
            # eq. 7 with e = step / steps: the global step, the same schedule whatever the process count
            p = mask_probability(step / max(config.steps, 1), config.mask_max)
            x0 = apply_masks(x0, n_sar, n_spe, p, gen)  # Alg. 1: M_s M_r on spectral only
        x_t, target = q_sample(x0, t, n_sar, model.schedule, speckle_c, generator=gen)  # eq. 8
        denom = (w.sum() * C).clamp_min(1.0)  # valid values of the whole global batch
        if ctx.enabled:
            x_t, t, target, w = (a[ctx.rank::ctx.world] for a in (x_t, t, target, w))
        if retry is not None:
            bn = _BatchNormStep(net)
            loss = retry.run(lambda micro: run_step(x_t, t, target, w, denom, micro, bn))
        else:
            try:
                loss = run_step(x_t, t, target, w, denom, n_local, None)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated
                if not is_out_of_memory(exc):
                    raise
                raise BdgfError(f"GPU out of memory in diffusion pretraining at {n_local} tiles per process "
                                f"(batch {config.batch} over {ctx.world} processes); lower --batch-size or "
                                "--tile-size, or run more processes") from None
        scaler.step(opt)
        scaler.update()
        step += 1
        if estimate is not None and stamps is not None:
            if cuda:
                torch.cuda.synchronize()  # the step's kernels are queued: time their end
            stamps.append(time.perf_counter() - started)
            if len(stamps) >= min(ESTIMATE_STEPS, config.steps - first_step) or stamps[-1] >= ESTIMATE_SECONDS:
                estimate(estimate_pretraining(stamps, config.steps - first_step, str(device)))
                stamps = None
        if ctx.enabled:  # the global batch's loss: the sum of the ranks' parts
            torch.distributed.all_reduce(loss)
        if progress is not None:
            progress(step / max(config.steps, 1), f"diffusion step {step}/{config.steps} loss {loss.item():.4f}")
        # and after the last step: what follows (the projection, the features) can be cancelled too,
        # and the rerun then resumes here instead of pretraining again
        # also every CHECKPOINT_SECONDS: a cancel (a signal raises wherever the run is) then loses
        # at most that much of a slow run (200 steps of the paper profile are hours on a CPU)
        if checkpoint and ctx.is_main and (step == config.steps or (config.checkpoint_every > 0
                                                                     and step % config.checkpoint_every == 0)
                                           or time.perf_counter() - saved_at >= CHECKPOINT_SECONDS):
            _save_checkpoint(checkpoint, model, opt, gen, step)
            saved_at = time.perf_counter()

    net.to(memory_format=torch.contiguous_format)
    if ctx.enabled:  # back to plain BatchNorm (eval mode uses the running statistics either way)
        plain = make_denoiser(config.architecture, config.widths, config.time_dim).to(device)
        plain.load_state_dict(net.state_dict())
        model.net = net = plain
    model.meta_extra["cost"] = model.cost(config.feature_tile)
    model.meta_extra["training"] = {"steps": config.steps, "steps_this_run": step - first_step,
                                    "seconds_this_run": round(time.perf_counter() - started, 3),
                                    "processes": ctx.world}
    if retry is not None and retry.retries:
        model.meta_extra["training"]["micro_batch"] = retry.batch
    net.eval()
    if config.feature_channels > 0 and ctx.is_main:
        from .features import fit_projection

        def read_window(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
            return spectral[:, r0:r1, c0:c1], sar[:, r0:r1, c0:c1]

        fit_projection(model, read_window, H, W, valid=valid[:H, :W], device=device,
                       progress=progress, cancelled=cancelled)
    return model
