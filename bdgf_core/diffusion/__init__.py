"""Diffusion pre-training and diffusion features of BDGF (paper Section III-A).

- ``forward``: schedule, Gaussian + gamma-speckle forward process, adaptive modality masking.
- ``unet``: SpectralDiff-style 3-D denoising U-Net.
- ``pretrain``: ``DiffusionConfig``, ``DiffusionModel`` (save/load), ``pretrain_ddpm``.
- ``features``: seamless tiled feature extraction (``extract_features``, ``extract_features_array``).
"""
from .features import extract_features, extract_features_array, fit_projection
from .forward import (Schedule, apply_masks, linear_schedule, mask_probability, per_step_speckle_shapes,
                      q_sample, sample_masks, sample_speckle, speckle_shape)
from .pretrain import DiffusionConfig, DiffusionModel, pretrain_ddpm
from .unet import UNet3D

__all__ = [
    "DiffusionConfig", "DiffusionModel", "Schedule", "UNet3D", "apply_masks", "extract_features",
    "extract_features_array", "fit_projection", "linear_schedule", "mask_probability",
    "per_step_speckle_shapes", "pretrain_ddpm", "q_sample", "sample_masks", "sample_speckle",
    "speckle_shape",
]
