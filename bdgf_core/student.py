"""Opt-in fast map: a fully convolutional student distilled from a trained BDGF on the scene's own pixels.

The exact BDGF prediction cannot share most of its work between neighbouring pixels (docs/DENSE.md),
so it runs at a few hundred pixels per second on a CPU. The student (:class:`StudentNet`) sees the
same p x p neighbourhood, is about 400 times cheaper, and runs densely over whole blocks. It is fitted
to the teacher's class probabilities on random windows of the scene being classified, written beside
the teacher's model file (``<model>.student.bdgf``) and reused for the same teacher and scene. The
map it gives is not the teacher's: the share of held-out sampled pixels on which both agree is
reported and kept in the student's file. The default classification stays the exact one.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BdgfError
from .modelfile import load_model, read_meta, save_model
from .network.student import StudentNet
from .normalise import apply

#: Pixels the teacher labels for the student (windows of WINDOW x WINDOW); a fifth are held out. Many small
#: windows rather than a few large ones: 16 windows of 32 x 32 left 19 of the 64 blocks of 20 x 20 pixels of
#: a 160 x 160 scene unlabelled and missed whole small classes (the student then never predicted them);
#: 256 of 8 x 8 reach every block (docs/bench/student.md).
SAMPLES = 16384
WINDOW = 8
#: Pixels per student training step (4 windows of 32 x 32).
STEP_PIXELS = 4096
STEPS = 800
#: Extra loss weight of pixels on the teacher's class edges (a 3 x 3 neighbour of another class in its map):
#: they are a few percent of the windows' pixels, and the student's disagreements sat there. 800 steps with
#: weight 4 against the former 400 with none, same teacher (standard / hard scene, seed 0): student minus
#: teacher whole-map OA -0.06 / +0.21 pp instead of -0.34 / -0.24, boundary agreement 99.6 / 93.5 % instead
#: of 97.7 / 90.7 % (docs/bench/student.md has the benchmark over seeds).
EDGE_WEIGHT = 4.0
#: Output pixels per side of the tiles a block is predicted in (bounds the activations' memory).
TILE = 128


def student_path(model: str | os.PathLike) -> Path:
    """Where the student of the model file ``model`` is written: beside it."""
    m = Path(model)
    return m.with_name(m.stem + ".student.bdgf")


def scene_key(inputs) -> dict:
    """What identifies the scene a student was fitted on: the input files, their sizes and times."""
    key = {}
    for name, src in (("spectral", inputs.spectral), ("sar", inputs.sar), ("features", inputs.features)):
        if src is not None:
            st = os.stat(src.path)
            key[name] = [str(Path(src.path).resolve()), st.st_size, int(st.st_mtime)]
    return key


def normalised_stack(stats: dict, spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray]) -> np.ndarray:
    """The student's input: the inputs normalised as the teacher's are (NaN -> 0), stacked on the channel axis."""
    parts = [np.nan_to_num(apply(spectral, stats["spectral_mean"], stats["spectral_std"]), copy=False),
             np.nan_to_num(apply(sar, stats["sar_mean"], stats["sar_std"]), copy=False)]
    if features is not None:
        parts.append(np.nan_to_num(features.astype(np.float32, copy=False)))
    return np.concatenate(parts, axis=0)


class StudentPredictor:
    """Predicts blocks (channels, h + p - 1, w + p - 1) with a :class:`StudentNet`, tile by tile."""

    def __init__(self, net: StudentNet, stats: dict, codes: list[int], uses_features: bool, info: dict | None = None
                 ) -> None:
        self.net, self.stats, self.codes, self.uses_features = net.eval(), stats, codes, uses_features
        self.patch = net.patch
        self.halo = net.patch // 2
        self.device = next(net.parameters()).device
        self.info = info or {}
        self.batch_size = None  # not batched by pixels: tiles of TILE x TILE

    @classmethod
    def from_file(cls, tensors: dict, meta: dict, device: str = "cpu") -> "StudentPredictor":
        try:
            net = StudentNet.from_meta(meta["student"])
            net.load_state_dict({k[len("net."):]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                                 if k.startswith("net.")})
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise BdgfError(f"the student model file is inconsistent ({exc}); delete it and classify again with "
                            "--fast student to distil a new one") from None
        stats = {k: tensors[k] for k in ("spectral_mean", "spectral_std", "sar_mean", "sar_std")}
        return cls(net.to(device), stats, [c["code"] for c in meta["classes"]],
                   bool(meta["inputs"].get("feature_bands")), meta.get("distillation", {}))

    def resident_bytes(self) -> int:
        return 2 * sum(t.numel() * t.element_size() for t in self.net.state_dict().values()) + 40 * 2**20

    def plan(self, memory_bytes: float) -> int:
        """Bytes the predictor needs: weights, PyTorch's first use, and one tile's activations (three
        layers alive at once) with its stacked input."""
        side = TILE + self.patch - 1
        tile = 4 * side * side * (3 * self.net.width + 2 * self.net.in_ch)
        return int(self.resident_bytes() + tile)

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(normalised_stack(self.stats, spectral, sar, features if self.uses_features else None))
        return predict_dense(self.net, x.to(self.device), self.patch)


@torch.inference_mode()
def predict_dense(net: StudentNet, x: torch.Tensor, patch: int, tile: int = TILE) -> np.ndarray:
    """Class probabilities (C, h, w) of a stacked block x (in_ch, h + p - 1, w + p - 1), in tiles of pixels."""
    q = patch - 1
    h, w = x.shape[1] - q, x.shape[2] - q
    if h < 1 or w < 1:
        raise BdgfError("the block is smaller than the patch halo")
    net.eval()
    out = torch.empty(net.n_classes, h, w, dtype=torch.float32)
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            rh, cw = min(tile, h - r), min(tile, w - c)
            logits = net(x[None, :, r:r + rh + q, c:c + cw + q])[0]
            out[:, r:r + rh, c:c + cw] = torch.softmax(logits.float(), dim=0).cpu()
    return out.numpy()


def read_window(inputs, r0: int, c0: int, size: int, halo: int) -> list[np.ndarray]:
    """Pixels [r0, r0 + size) x [c0, c0 + size) of each input with the halo, padded at the image borders
    the way classification pads them (reflect, symmetric when the image is smaller than the halo)."""
    h, w = inputs.spectral.height, inputs.spectral.width
    a, b = max(0, r0 - halo), min(h, r0 + size + halo)
    ca, cb = max(0, c0 - halo), min(w, c0 + size + halo)
    mode = "reflect" if min(h, w) > halo else "symmetric"
    pad = ((0, 0), (halo - (r0 - a), halo - (b - r0 - size)), (halo - (c0 - ca), halo - (cb - c0 - size)))
    return [np.pad(src.read(a, b, ca, cb), pad, mode=mode) for src in inputs.sources()]


def teacher_edges(targets: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool: pixels of (N, C, h, w) teacher probabilities whose class (argmax) differs from that
    of one of their 8 neighbours inside the window."""
    lab = targets.argmax(1, keepdim=True).float()
    hi = F.max_pool2d(lab, 3, stride=1, padding=1)  # padding is -inf: the window's border sees only the window
    lo = -F.max_pool2d(-lab, 3, stride=1, padding=1)
    return (hi != lo)[:, 0]


def distil(teacher, inputs, samples: int = SAMPLES, steps: int = STEPS, seed: int = 0, width: int = 64,
           window: int = WINDOW, edge_weight: float = EDGE_WEIGHT, log: Callable[[str], None] = lambda m: None,
           progress: Callable[[float], None] = lambda f: None,
           cancelled: Callable[[], bool] = lambda: False) -> tuple[StudentNet, dict]:
    """Fit a :class:`StudentNet` to ``teacher`` (a BDGFPredictor) on random windows of the scene.

    Returns (the student in eval mode on CPU, a summary: samples, held-out agreement with the
    teacher, times). Windows with no valid pixel are skipped; nodata pixels carry no loss.
    """
    if inputs.diffusion is not None:
        raise BdgfError("--fast student needs the diffusion features as a raster: give --features (the raster "
                        "'Pretrain DDPM' wrote) instead of --diffusion-model")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    h, w = inputs.spectral.height, inputs.spectral.width
    size = min(window, h, w)
    n_win = max(2, math.ceil(samples / size ** 2))
    p, halo = teacher.patch, teacher.halo
    uses_features = teacher.net.config.needs_features
    xs, targets, masks = [], [], []
    for k in range(n_win):  # the teacher's probabilities: the expensive part
        if cancelled():
            raise BdgfError("cancelled")
        r0, c0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        arrays = read_window(inputs, r0, c0, size, halo)
        spec, sar = arrays[0], arrays[1]
        feats = arrays[2] if len(arrays) > 2 else None
        valid = np.ones((size, size), bool)
        for a in arrays:
            valid &= np.isfinite(a[:, halo:halo + size, halo:halo + size]).all(0)
        if not valid.any():
            continue
        targets.append(torch.from_numpy(teacher.predict_block(spec, sar, feats)))
        xs.append(torch.from_numpy(normalised_stack(teacher.stats, spec, sar, feats if uses_features else None)))
        masks.append(torch.from_numpy(valid))
        progress(0.7 * (k + 1) / n_win)
    if len(xs) < 2:
        raise BdgfError("too few pixels with data in both the spectral and SAR rasters to distil a student")
    t_teacher = time.perf_counter() - t0
    x, t, m = torch.stack(xs), torch.stack(targets), torch.stack(masks)
    # per-pixel loss weights: nodata pixels 0, the teacher's class edges 1 + edge_weight, the rest 1
    wts = m.float() * (1.0 + edge_weight * teacher_edges(t).float())
    held = max(1, len(xs) // 5)
    order = torch.from_numpy(rng.permutation(len(xs)))
    test, train = order[:held], order[held:]
    torch.manual_seed(seed)
    net = StudentNet(x.shape[1], t.shape[1], p, width)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batch = min(max(4, STEP_PIXELS // size ** 2), len(train))  # about STEP_PIXELS pixels a step
    net.train()
    for step in range(steps):
        if cancelled():
            raise BdgfError("cancelled")
        idx = train[torch.from_numpy(rng.choice(len(train), batch, replace=False))]
        logp = F.log_softmax(net(x[idx]), dim=1)
        # soft cross-entropy with the teacher's probabilities (KL up to the teacher's entropy)
        loss = -((t[idx] * logp).sum(1) * wts[idx]).sum() / wts[idx].sum().clamp(min=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        progress(0.7 + 0.3 * (step + 1) / steps)
    net.eval()
    with torch.inference_mode():
        agree = (net(x[test]).argmax(1) == t[test].argmax(1))[m[test]].float().mean().item()
    summary = {"samples": int(m.sum()), "held_out_pixels": int(m[test].sum()), "agreement_held_out": agree,
               "steps": steps, "width": width, "edge_weight": edge_weight, "teacher_s": round(t_teacher, 1),
               "total_s": round(time.perf_counter() - t0, 1)}
    log(f"student distilled on {summary['samples']} pixels of the scene in {summary['total_s']:.0f} s; it agrees "
        f"with the BDGF model on {100 * agree:.1f}% of {summary['held_out_pixels']} held-out pixels")
    return net, summary


def save_student(path: Path, net: StudentNet, teacher_meta: dict, teacher_tensors: dict, summary: dict,
                 scene: dict) -> Path:
    """Write the student atomically, with what it needs to classify alone (classes, inputs, statistics)."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({k: teacher_tensors[k] for k in ("spectral_mean", "spectral_std", "sar_mean", "sar_std")})
    meta = {"classes": teacher_meta["classes"], "inputs": teacher_meta["inputs"], "student": net.meta(),
            "teacher_sha256": teacher_meta["tensors_sha256"], "scene": scene, "distillation": summary}
    for k in ("features",):
        if k in teacher_meta:
            meta[k] = teacher_meta[k]
    return save_model(path, "student", tensors, meta)


def student_for(model: str | os.PathLike, teacher, inputs, device: str = "cpu", rep=None,
                **kw) -> StudentPredictor:
    """The student of ``model`` for this scene: the one beside the model when it was fitted to this teacher
    on this scene, otherwise a new one, distilled and written beside the model."""
    path = student_path(model)
    tensors, meta = load_model(model, "bdgf")
    scene = scene_key(inputs)
    if path.exists():
        try:
            old = read_meta(path)
        except BdgfError:
            old = {}
        if old.get("teacher_sha256") == meta["tensors_sha256"] and old.get("scene") == scene:
            st, sm = load_model(path, "student")
            if rep is not None:
                a = sm.get("distillation", {}).get("agreement_held_out")
                rep.info(f"fast map: student {path.name} (agreement with the BDGF model on held-out pixels "
                         f"{100 * a:.1f}%)" if a is not None else f"fast map: student {path.name}")
            return StudentPredictor.from_file(st, sm, device)
    from .atomic import check_writable

    check_writable(path)  # before the distillation's minutes, not after
    log = rep.info if rep is not None else (lambda m: None)
    # the distillation's own progress, 0-100 %, before the classification's (its log line says which is which)
    progress = rep.progress if rep is not None else (lambda f: None)
    cancelled = rep.cancelled if rep is not None else (lambda: False)
    log(f"fast map: distilling a student of {Path(model).name} on this scene (written to {path.name})")
    net, summary = distil(teacher, inputs, log=log, progress=lambda f: progress(f), cancelled=cancelled, **kw)
    save_student(path, net, meta, tensors, summary, scene)
    st, sm = load_model(path, "student")
    return StudentPredictor.from_file(st, sm, device)
