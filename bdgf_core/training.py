"""Training of the BDGF classifier on labelled pixels, and block-wise prediction.

Patches are cut per batch from images padded once (reflect) with bdgf_core.patches, so memory
stays at one padded copy of the inputs whatever the number of labelled pixels.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import BdgfError, Cancelled
from .network.bdgf import BDGFConfig, BDGFNet
from .patches import extract_patches, pad_reflect

Pixels = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, cols, labels 0..C-1
Progress = Callable[[float, str], None]


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaler needed), nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return nullcontext()


def _check_pixels(name: str, px: Pixels, shape: tuple[int, int], n_classes: int) -> Pixels:
    rows, cols, labels = (np.asarray(a).astype(np.int64).ravel() for a in px)
    if not (len(rows) == len(cols) == len(labels)):
        raise BdgfError(f"{name}: rows, cols and labels differ in length")
    if len(rows) and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] or cols.max() >= shape[1]):
        raise BdgfError(f"{name}: some pixels lie outside the {shape[0]}x{shape[1]} image")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise BdgfError(f"{name}: labels must be 0..{n_classes - 1}")
    return rows, cols, labels


class _PatchSource:
    """Padded images; ``batch(idx)`` -> (spec, sar, dif) tensors (n, C, p, p) for pixels idx."""

    def __init__(self, images: Sequence[Optional[np.ndarray]], patch: int, rows: np.ndarray, cols: np.ndarray,
                 device: torch.device) -> None:
        self.padded = [None if im is None else pad_reflect(np.asarray(im, dtype=np.float32), patch) for im in images]
        self.patch, self.rows, self.cols, self.device = patch, rows, cols, device

    def batch(self, idx: np.ndarray) -> list[Optional[Tensor]]:
        return [None if pd is None else
                torch.from_numpy(extract_patches(pd, self.rows[idx], self.cols[idx], self.patch)).to(self.device)
                for pd in self.padded]


@torch.inference_mode()
def _accuracy(net: BDGFNet, src: _PatchSource, labels: np.ndarray, batch_size: int) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        idx = np.arange(start, min(start + batch_size, len(labels)))
        with _autocast(src.device):
            pred = net(*src.batch(idx)).logits.argmax(-1).cpu().numpy()
        correct += int((pred == labels[idx]).sum())
    return correct / max(len(labels), 1)


def fit_bdgf(spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray], train: Pixels,
             val: Optional[Pixels], n_classes: int, config: Optional[BDGFConfig] = None, device: str = "cpu",
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None) -> tuple[BDGFNet, dict]:
    """Train a BDGFNet on labelled pixels; return (net in eval mode on ``device``, history).

    spectral (Bs, H, W), sar (Ba, H, W), features (F, H, W) or None (only when no guidance is
    on): float32, already normalised. train / val: (rows, cols, labels). With val, the epoch
    with the best validation OA (first one on ties) is kept; without, the last epoch.
    History: loss (mean per epoch), val_oa (per epoch, empty without val), lr, best_epoch,
    best_val_oa, seconds. Repeatable on CPU for a given config.seed.
    """
    cfg = config or BDGFConfig()
    dev = torch.device(device)
    spectral, sar = np.asarray(spectral), np.asarray(sar)
    if spectral.ndim != 3 or sar.ndim != 3 or spectral.shape[1:] != sar.shape[1:]:
        raise BdgfError("spectral and SAR images must be (bands, H, W) on the same grid")
    if cfg.needs_features:
        if features is None or features.ndim != 3 or features.shape[1:] != spectral.shape[1:]:
            raise BdgfError("diffusion guidance is on: give (F, H, W) diffusion features on the image grid")
    else:
        features = None  # no branch reads them
    shape = spectral.shape[1:]
    tr_rows, tr_cols, tr_labels = _check_pixels("training pixels", train, shape, n_classes)
    if len(tr_labels) == 0:
        raise BdgfError("no training pixels")
    images = (spectral, sar, features)
    tr_src = _PatchSource(images, cfg.patch, tr_rows, tr_cols, dev)
    va_src, va_labels = None, None
    if val is not None:
        va_rows, va_cols, va_labels = _check_pixels("validation pixels", val, shape, n_classes)
        if len(va_labels):
            va_src = _PatchSource(images, cfg.patch, va_rows, va_cols, dev)
            va_src.padded = tr_src.padded  # same images: share the padded copies

    torch.manual_seed(cfg.seed)  # weights
    gen = np.random.default_rng(cfg.seed)  # batch order
    net = BDGFNet(spectral.shape[0], sar.shape[0], 0 if features is None else features.shape[0], n_classes,
                  cfg).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    labels_t = torch.from_numpy(tr_labels).to(dev)
    history: dict = {"loss": [], "val_oa": [], "lr": [], "best_epoch": None, "best_val_oa": None, "seconds": 0.0}
    best_state, best_oa = None, -1.0
    n = len(tr_labels)
    # A last batch of one sample would break BatchNorm in training mode: fold it into the previous.
    starts = list(range(0, n, cfg.batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        order = gen.permutation(n)
        total, count = 0.0, 0
        for i, s in enumerate(starts):
            if cancelled is not None and cancelled():
                raise Cancelled()
            idx = order[s:starts[i + 1] if i + 1 < len(starts) else n]
            spec_b, sar_b, dif_b = tr_src.batch(idx)
            if len(idx) < 2:  # a single training pixel in all: BatchNorm needs 2 samples
                spec_b, sar_b = spec_b.repeat(2, 1, 1, 1), sar_b.repeat(2, 1, 1, 1)
                dif_b = None if dif_b is None else dif_b.repeat(2, 1, 1, 1)
                y = labels_t[idx].repeat(2)
            else:
                y = labels_t[idx]
            with _autocast(dev):
                out = net(spec_b, sar_b, dif_b)
            loss, _ = net.loss(out, y)  # loss in fp32 (the mutual module casts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history["lr"].append(opt.param_groups[0]["lr"])
        sched.step()
        history["loss"].append(total / count)
        msg = f"epoch {epoch + 1}/{cfg.epochs}: loss {total / count:.4f}"
        if va_src is not None:
            oa = _accuracy(net, va_src, va_labels, cfg.batch_size)
            history["val_oa"].append(oa)
            msg += f", validation OA {oa:.4f}"
            if oa > best_oa:
                best_oa, history["best_epoch"] = oa, epoch
                best_state = copy.deepcopy(net.state_dict())
        if progress is not None:
            progress((epoch + 1) / cfg.epochs, msg)
    if best_state is not None:
        net.load_state_dict(best_state)
        history["best_val_oa"] = best_oa
    else:
        history["best_epoch"] = cfg.epochs - 1
    history["seconds"] = time.perf_counter() - t0
    net.eval()
    return net, history


def _windows(block: np.ndarray | Tensor, patch: int, device: torch.device) -> Tensor:
    """(C, h+p-1, w+p-1) -> strided view (h, w, C, p, p) on ``device`` (no copy of the windows)."""
    t = torch.as_tensor(np.asarray(block, dtype=np.float32) if not isinstance(block, Tensor) else block)
    t = t.to(device=device, dtype=torch.float32)
    return t.unfold(1, patch, 1).unfold(2, patch, 1).permute(1, 2, 0, 3, 4)


def predict_block(net: BDGFNet, spectral_block: np.ndarray | Tensor, sar_block: np.ndarray | Tensor,
                  feature_block: np.ndarray | Tensor | None, patch: int, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (C, h, w) float32 of the inner pixels of blocks (channels, h+p-1, w+p-1).

    The blocks carry the patch halo (the caller pads at image borders the way training did).
    Pixels go through the net ``batch_size`` at a time; each batch gathers its patches from a
    strided window view, so only that batch's patches are materialised.
    """
    if patch != net.config.patch:
        raise BdgfError(f"the model was trained with patch size {net.config.patch}, not {patch}")
    device = next(net.parameters()).device
    spec_w = _windows(spectral_block, patch, device)
    h, w = spec_w.shape[:2]
    sar_w = _windows(sar_block, patch, device)
    use_dif = net.config.needs_features
    dif_w = _windows(feature_block, patch, device) if use_dif else None
    if sar_w.shape[:2] != (h, w) or (dif_w is not None and dif_w.shape[:2] != (h, w)):
        raise BdgfError("spectral, SAR and feature blocks must cover the same pixels")
    spec_w, sar_w = spec_w.reshape(h * w, *spec_w.shape[2:]), sar_w.reshape(h * w, *sar_w.shape[2:])
    if dif_w is not None:
        dif_w = dif_w.reshape(h * w, *dif_w.shape[2:])
    net.eval()
    probs = torch.empty(h * w, net.n_classes, dtype=torch.float32)
    with torch.inference_mode():
        for s in range(0, h * w, batch_size):
            e = min(s + batch_size, h * w)
            with _autocast(device):
                logits = net(spec_w[s:e], sar_w[s:e], None if dif_w is None else dif_w[s:e]).logits
            probs[s:e] = torch.softmax(logits.float(), dim=-1).cpu()
    return probs.T.reshape(net.n_classes, h, w).numpy()


@torch.inference_mode()
def predict_pixels(net: BDGFNet, spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray],
                   flat: np.ndarray, patch: int, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (N, C) of the pixels at flat indices of normalised whole images."""
    net.eval()
    device = next(net.parameters()).device
    rows, cols = np.divmod(np.asarray(flat, np.int64), spectral.shape[2])
    src = _PatchSource([spectral, sar, features], patch, rows, cols, device)
    out = []
    for i in range(0, rows.size, batch_size):
        spec, sr, dif = src.batch(np.arange(i, min(i + batch_size, rows.size)))
        with _autocast(device):
            logits = net(spec, sr, dif).logits
        out.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, net.n_classes), np.float32)
