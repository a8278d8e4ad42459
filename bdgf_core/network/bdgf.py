"""BDGF multi-branch classifier (Section III-B/C): CNN, transformer and Mamba branches guided by
diffusion features, fused by one head and trained with mutual learning (eqs. 11-29).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaptive import EdgeAwarePatch
from .cnn import CNNBranch
from .mamba import MambaBranch
from .mutual import MutualLearning
from .transformer import TransformerBranch

BRANCHES = ("cnn", "trans", "mamba")
#: What a config written before a field existed meant (model files, checkpoints): the old network and
#: training. A file without a key gets these, not today's defaults (issue 15's fidelity and edge switches).
LEGACY: dict[str, Any] = {"mamba_dif_pass": False, "temperature_floor": 0.0, "branch_ce_weight": 0.0,
                          "centre": False, "centre_ce": 0.0, "flips": False, "mix_share": 0.0, "adaptive": False}


@dataclass
class BDGFConfig:
    """Network and training settings; the defaults are the paper's where it gives them.

    Table II ablations: ``use_*`` switch branches (at least one on), ``guide_*`` switch the
    diffusion guidance of each branch, ``mutual`` the mutual learning loss. The validation share
    is chosen by the caller (it passes the validation pixels to ``fit_bdgf``).

    Edge switches (not in the paper, issue 15; docs/METHOD.md "Class edges"): ``centre`` feeds the
    centre pixel's own spectral + SAR (+ diffusion) vector through a small MLP into the fused head;
    ``flips`` trains on randomly flipped / rotated patches; ``mix_share`` is the share of training
    patches whose far side of a random line is taken from a patch of another class
    (bdgf_core/augment.py). ``adaptive`` pulls the neighbours unlike the centre pixel to the centre's
    values before the branches see the patch (network/adaptive.py).
    """

    patch: int = 9  # paper: patch size 9 (any odd size >= 1 works, 1 = pixel only)
    embed: int = 64  # paper: embedding dimension 64
    use_cnn: bool = True
    use_transformer: bool = True
    use_mamba: bool = True
    guide_cnn: bool = True
    guide_transformer: bool = True
    guide_mamba: bool = True
    mutual: bool = True
    tokens: int = 4  # tokens per modality from eq. 13 (not given in the paper)
    d_state: int = 16  # Mamba defaults
    d_conv: int = 4
    expand: int = 2
    branch_ce_weight: float = 1.0  # CE on each branch head; eq. 29 prints 0 (why 1: network/mutual.py)
    temperature_floor: float = 1.0  # eq. 27's T kept >= this; 0 = as printed (network/mutual.py)
    mamba_dif_pass: bool = True  # eq. 24: f_CA^dif from the Mamba pass f_m^dif (False: files before it)
    lr: float = 4e-4  # paper: Adam, 4e-4
    weight_decay: float = 0.0
    milestones: Optional[tuple[int, ...]] = None  # MultiStepLR epochs; None: 50 % and 75 % of ``epochs``
    gamma: float = 0.5  # paper: MultiStepLR decay 0.5
    epochs: int = 100
    batch_size: int = 64
    seed: int = 0
    # edge switches (issue 15, docs/bench/edges.md): centre, flips and mixed patches off by default (the
    # hard scene lost whole-map OA with them on); edge-aware patches on, they won on both scenes.
    # LEGACY gives model files written before a switch the network they were trained with.
    centre: bool = False
    flips: bool = False
    mix_share: float = 0.0
    centre_ce: float = 0.0  # weight of a CE on a head of f_centre alone (0: f_centre feeds the fused head only)
    adaptive: bool = True  # edge-aware patches (network/adaptive.py)

    def __post_init__(self) -> None:
        if self.patch < 1 or self.patch % 2 == 0:
            raise ValueError(f"patch size must be odd and positive, got {self.patch}")
        if self.centre_ce < 0:
            raise ValueError(f"the centre CE weight must be >= 0, got {self.centre_ce}")
        if not 0.0 <= self.mix_share <= 1.0:
            raise ValueError(f"the mixed-patch share must be between 0 and 1, got {self.mix_share}")
        if not (self.use_cnn or self.use_transformer or self.use_mamba):
            raise ValueError("at least one of the CNN, transformer and Mamba branches must be on")
        if self.milestones is not None:
            self.milestones = tuple(int(m) for m in self.milestones)

    def lr_milestones(self) -> tuple[int, ...]:
        """The MultiStepLR milestones: the given ones, or 50 % and 75 % of the epochs (not in the paper)."""
        if self.milestones is not None:
            return self.milestones
        return tuple(sorted({m for m in (self.epochs // 2, (3 * self.epochs) // 4) if 0 < m < self.epochs}))

    @property
    def branches(self) -> tuple[str, ...]:
        on = (self.use_cnn, self.use_transformer, self.use_mamba)
        return tuple(b for b, o in zip(BRANCHES, on) if o)

    @property
    def needs_features(self) -> bool:
        """True when some enabled branch reads the diffusion features."""
        return ((self.use_cnn and self.guide_cnn) or (self.use_transformer and self.guide_transformer)
                or (self.use_mamba and self.guide_mamba))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = None if self.milestones is None else list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BDGFConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{**LEGACY, **{k: v for k, v in d.items() if k in names}})


class CentrePixel(nn.Module):
    """f_centre (N, embed): an MLP of the centre pixel's spectral, SAR (and diffusion) values.

    A patch network sees the centre pixel as one of p * p; at a class edge half of the patch
    belongs to the neighbouring class, and the pixel's own values are what decides (issue 15).
    """

    def __init__(self, channels: int, embed: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, embed), nn.LayerNorm(embed), nn.GELU(), nn.Linear(embed, embed))

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor] = None) -> Tensor:
        c = spec.shape[-1] // 2
        parts = [spec[..., c, c], sar[..., c, c]] + ([] if dif is None else [dif[..., c, c]])
        return self.mlp(torch.cat(parts, dim=-1))


@dataclass
class BDGFOutput:
    """logits: fused head (N, C); branch_logits / branch_features: name -> (N, C) / (N, embed)."""

    logits: Tensor
    branch_logits: dict[str, Tensor] = field(default_factory=dict)
    branch_features: dict[str, Tensor] = field(default_factory=dict)
    centre_logits: Optional[Tensor] = None  # the centre pixel's own head, with centre_ce > 0


class BDGFNet(nn.Module):
    """The BDGF classifier of one pixel from its patches.

    forward(spec (N, Bs, p, p), sar (N, Ba, p, p), dif (N, F, p, p) or None) -> BDGFOutput.
    ``dif`` may be None (and ``feature_channels`` 0) only when no enabled branch is guided.

    The Mamba branch uses the CNN branch's f_cnn (eq. 24) only when both are on; with the CNN
    branch off, its group attention has the spectral (and diffusion) members only.

    With ``config.centre`` a :class:`CentrePixel` feature f_centre joins the fused head's input.
    """

    def __init__(self, spectral_bands: int, sar_bands: int, feature_channels: int, n_classes: int,
                 config: Optional[BDGFConfig] = None) -> None:
        super().__init__()
        cfg = config or BDGFConfig()
        if cfg.needs_features and feature_channels < 1:
            raise ValueError("diffusion guidance is on but feature_channels is 0; give diffusion features "
                             "or switch the guidance off")
        if spectral_bands < 1 or sar_bands < 1 or n_classes < 2:
            raise ValueError("need at least 1 spectral band, 1 SAR band and 2 classes")
        self.config = cfg
        self.spectral_bands, self.sar_bands = spectral_bands, sar_bands
        self.feature_channels, self.n_classes = feature_channels, n_classes
        e, p = cfg.embed, cfg.patch
        self.cnn = CNNBranch(spectral_bands, sar_bands, feature_channels, e, cfg.guide_cnn) if cfg.use_cnn else None
        self.trans = (TransformerBranch(spectral_bands, sar_bands, feature_channels, p, e, cfg.tokens,
                                        cfg.guide_transformer) if cfg.use_transformer else None)
        self.mamba = (MambaBranch(spectral_bands, sar_bands, feature_channels, p, e, cfg.guide_mamba, cfg.use_cnn,
                                  cfg.d_state, cfg.d_conv, cfg.expand, cfg.mamba_dif_pass) if cfg.use_mamba else None)
        self.heads = nn.ModuleDict({b: nn.Linear(e, n_classes) for b in cfg.branches})  # z per branch (26)
        # the centre pixel's vector: with the diffusion features only where some branch is guided
        centre_in = spectral_bands + sar_bands + (feature_channels if cfg.needs_features else 0)
        self.centre = CentrePixel(centre_in, e) if cfg.centre else None
        self.centre_head = nn.Linear(e, n_classes) if cfg.centre and cfg.centre_ce > 0 else None
        self.edge = EdgeAwarePatch() if cfg.adaptive else None  # tau set by training (adaptive.calibrate)
        fused_in = e * (len(cfg.branches) + (1 if cfg.centre else 0))
        self.fused_head = nn.Linear(fused_in, n_classes)  # eq. 29: z_total = FC(f_trans, f_cnn, f_mamba[, f_centre])
        self.mutual = MutualLearning(cfg.branches, cfg.mutual, cfg.branch_ce_weight, cfg.temperature_floor)

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor] = None) -> BDGFOutput:
        if self.edge is not None:  # edge-aware patches: the branches and f_centre see the pulled patches
            spec, sar, dif = self.edge(spec, sar, dif)
        feats: dict[str, Tensor] = {}
        cnn_map = None
        if self.cnn is not None:
            cnn_map, feats["cnn"] = self.cnn(spec, sar, dif)  # eqs. 11-12
        if self.trans is not None:
            feats["trans"] = self.trans(spec, sar, dif)  # eqs. 13-19
        if self.mamba is not None:
            feats["mamba"] = self.mamba(spec, sar, dif, cnn_map)[1]  # eqs. 20-24
        logits = {b: self.heads[b](f) for b, f in feats.items()}
        # Concatenation order of eq. 29: (f_trans, f_cnn, f_mamba), skipping branches that are off.
        order = [b for b in ("trans", "cnn", "mamba") if b in feats]
        parts = [feats[b] for b in order]
        centre_logits = None
        if self.centre is not None:  # not a branch of the mutual loss: it feeds the fused head
            parts.append(self.centre(spec, sar, dif if self.config.needs_features else None))
            if self.centre_head is not None:
                centre_logits = self.centre_head(parts[-1])
        fused = self.fused_head(torch.cat(parts, dim=-1))
        return BDGFOutput(fused, logits, feats, centre_logits)

    def loss(self, out: BDGFOutput, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Eq. 29: CE of the fused head plus the pairwise tempered KL terms (CE only without mutual);
        with ``centre_ce`` also that weight times the CE of the centre pixel's own head (not in the paper)."""
        total, parts = self.mutual(out.logits, out.branch_logits, out.branch_features, labels)
        if out.centre_logits is not None:
            term = F.cross_entropy(out.centre_logits.float(), labels)
            total = total + self.config.centre_ce * term
            parts["ce_centre"] = float(term.detach())
        return total, parts

    def meta(self) -> dict[str, Any]:
        """JSON-able constructor arguments, to rebuild the net before load_state_dict."""
        return {"spectral_bands": self.spectral_bands, "sar_bands": self.sar_bands,
                "feature_channels": self.feature_channels, "n_classes": self.n_classes,
                "config": self.config.to_dict()}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "BDGFNet":
        return cls(meta["spectral_bands"], meta["sar_bands"], meta["feature_channels"], meta["n_classes"],
                   BDGFConfig.from_dict(meta["config"]))
