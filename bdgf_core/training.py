"""Training of the BDGF classifier on labelled pixels, and block-wise prediction.

Patches are cut per batch from images padded once (reflect) with bdgf_core.patches, so memory
stays at one padded copy of the inputs whatever the number of labelled pixels.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import train_checkpoint
from .augment import augment_batch
from .distributed import (SINGLE, DistContext, all_ranks_agree, broadcast_object, check_batch, loss_scale, rank_slice,
                          sync_batchnorm)
from .errors import BdgfError, Cancelled
from .eta import format_duration, project
from .network.adaptive import calibrate
from .network.bdgf import BDGFConfig, BDGFNet
from .oom import OomRetry, for_each_batch
from .patchconv import SharedFirstLayers, patches, tile_shape
from .patches import extract_patches, pad_reflect

Pixels = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, cols, labels 0..C-1
Progress = Callable[[float, str], None]
Log = Callable[[str], None]


def micro_spans(n: int, micro: int) -> list[tuple[int, int]]:
    """[start, end) micro-batches of at most ``micro`` (>= 2) samples covering [0, n); a last one
    of a single sample is folded into the one before (BatchNorm in training mode needs two)."""
    spans = [(s, min(s + micro, n)) for s in range(0, n, micro)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


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


class _NetWithLoss(torch.nn.Module):
    """forward(spec, sar, dif, labels) -> the loss of eq. 29, for DistributedDataParallel.

    The loss's parts (CE, KL terms, temperatures) of the last call are kept in ``parts``.
    """

    def __init__(self, net: BDGFNet) -> None:
        super().__init__()
        self.net = net
        self.parts: dict[str, float] = {}

    def forward(self, spec: Tensor, sar: Tensor, dif: Optional[Tensor], labels: Tensor) -> Tensor:
        loss, self.parts = self.net.loss(self.net(spec, sar, dif), labels)
        return loss


#: Largest batch chosen from a memory budget on CPU: smaller batches keep a tile's activations in
#: cache; 128-256 pixels were the fastest per core here for the paper's network (docs/bench/classify.md).
#: Also the default batch of :func:`predict_pixels` on CPU: the held-out test of the demo's model ran
#: at 628 pixels/s in batches of 1024 and 948-985 in batches of 64-256 (2 threads, medians;
#: docs/bench/evaluation.md).
CPU_MAX_BATCH = 256
GPU_BATCH = 1024

#: Validation pixels scored per epoch by default (issue 16): a fixed stratified subset, so that
#: choosing the epoch costs a fraction of training. On the demo scene (350 training pixels, CPU,
#: benchmarks/bench_validation.py) a validation pixel cost 0.27-0.37 of a training pixel: 500 took
#: 28 % of the run, 256 took 21 %, 200 took 19.7 %. Its OA has a standard error of about 2 points
#: at 90 %, enough to rank epochs.
VAL_CAP = 200


def validation_subset(labels: np.ndarray, cap: Optional[int], seed: int) -> np.ndarray:
    """Indices (sorted) of a stratified subset of at most ``cap`` of ``labels``; all of them without a cap.

    Each class keeps its share of the validation pixels (largest remainders), and every class
    present keeps at least one pixel while the cap allows. The same labels, cap and seed give
    the same subset, so every epoch (and a resumed run) is scored on the same pixels.
    """
    labels = np.asarray(labels).ravel()
    n = labels.size
    if cap is None or n <= cap:
        return np.arange(n)
    if cap < 1:
        raise BdgfError(f"the validation cap must be at least 1 pixel, got {cap}; give a positive cap or none")
    rng = np.random.default_rng([seed, 16])  # its own stream: the batch order stays that of an uncapped run
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * cap / n
    take = np.floor(exact).astype(np.int64)
    short = np.flatnonzero(take == 0)[:max(cap - int(take.sum()), 0)]  # a class too small for its share keeps one
    take[short] = 1
    rest = cap - int(take.sum())
    if rest > 0:
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        room = order[take[order] < counts[order]][:rest]
        take[room] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def validation_warnings(loss: Sequence[float], val_oa: Sequence[float], best_epoch: Optional[int]) -> list[str]:
    """Signs that the validation set does not measure what training learns (issue 15), as sentences.

    * the best validation epoch is the first (of three or more): the kept model barely trained;
    * over the second half of the run, validation OA fell (by more than 1 point on average) while
      the training loss fell: the validation pixels disagree with the training pixels.
    """
    out = []
    n = len(val_oa)
    if n >= 3 and best_epoch == 0:
        out.append(f"validation OA was best at the first epoch ({val_oa[0]:.1%}) of {n}: the kept model is "
                   "barely trained; check that the validation pixels resemble the training pixels (split, "
                   "validation share) or train without validation (--validation-share 0)")
    if n >= 4 and len(loss) >= n:
        h = n // 2
        loss_fell = np.mean(loss[h:n]) < np.mean(loss[:h])
        oa_fell = np.mean(val_oa[h:]) < np.mean(val_oa[:h]) - 0.01
        if loss_fell and oa_fell:
            out.append(f"validation OA fell while the training loss fell (mean OA {np.mean(val_oa[:h]):.1%} in the "
                       f"first half of the epochs, {np.mean(val_oa[h:]):.1%} in the second): the validation pixels "
                       "disagree with the training pixels or the model overfits; the kept epoch is "
                       f"{(best_epoch or 0) + 1}")
    return out


@torch.inference_mode()
def _accuracy(net: BDGFNet, src: _PatchSource, labels: np.ndarray, retry: OomRetry) -> tuple[float, float]:
    """(OA, mean cross-entropy of the fused head) on the validation pixels."""
    net.eval()
    correct, ce = 0, 0.0

    def chunk(start: int, end: int) -> None:
        nonlocal correct, ce
        idx = np.arange(start, end)
        with _autocast(src.device):
            logits = net(*src.batch(idx)).logits.float()
        y = torch.from_numpy(labels[idx]).to(logits.device)
        correct += int((logits.argmax(-1) == y).sum())
        ce += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))

    for_each_batch(len(labels), chunk, retry)
    n = max(len(labels), 1)
    return correct / n, ce / n


def estimate_training(ends: Sequence[float], epochs: int, device: str) -> str:
    """The training's total time, as a sentence, from the ends of its first epochs (seconds since the
    run started; ``epochs``: the epochs of this run; the first epoch's one-time costs:
    :func:`bdgf_core.eta.project`). The held-out test after the epochs is not included."""
    total, _, per_epoch = project(ends, epochs)
    return (f"estimated training time: {format_duration(total)} ({epochs} epochs at {per_epoch} s/epoch on "
            f"{device}, validation included)")


def better_epoch(oa: float, loss: float, best_oa: float, best_loss: float) -> bool:
    """Whether an epoch's validation (OA, loss) beats the best so far: higher OA, or the same OA and a
    lower loss. OA over a few hundred pixels ties often (on a clean scene it reaches 100 % in an
    epoch or two); keeping the first of the ties kept a barely trained model, whose errors sat on the
    class edges that validation pixels (polygon interiors) do not show."""
    return oa > best_oa or (oa == best_oa and loss < best_loss)


def fit_bdgf(spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray], train: Pixels,
             val: Optional[Pixels], n_classes: int, config: Optional[BDGFConfig] = None, device: str = "cpu",
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None, dist_ctx: Optional[DistContext] = None,
             log: Optional[Log] = None, checkpoint: Optional[str] = None,
             val_cap: Optional[int] = VAL_CAP) -> tuple[BDGFNet, dict]:
    """Train a BDGFNet on labelled pixels; return (net in eval mode on ``device``, history).

    spectral (Bs, H, W), sar (Ba, H, W), features (F, H, W) or None (only when no guidance is
    on): float32, already normalised. train / val: (rows, cols, labels). With val, the epoch
    with the best validation OA is kept, of equal OAs the one of lowest validation loss
    (:func:`better_epoch`); without, the last epoch. Each epoch
    is scored on the same stratified subset of at most ``val_cap`` validation pixels
    (:func:`validation_subset`; None: all of them).
    History: loss (mean per epoch), val_oa and val_loss (per epoch, empty without val), lr, terms (name ->
    per-epoch mean of each part of the loss: ce, the KL terms kl_ct/kl_cm/kl_tm and the mean
    temperatures T_kl_*, ce_<branch>), best_epoch, best_val_oa, best_val_loss, val_pixels (scored per epoch),
    val_pixels_given, seconds, val_seconds (of those, spent scoring), warnings (sentences from
    :func:`validation_warnings`, also sent to ``log``). Repeatable on CPU for a given config.seed.

    Under torchrun (``dist_ctx`` from :func:`bdgf_core.distributed.context`) every process draws the
    same global batches and trains on its slice of each, with DistributedDataParallel and
    global-batch BatchNorm, so the weights are those of one process (see bdgf_core/distributed.py).

    Out of memory on the GPU (one process): the step is run again as micro-batches of half the size
    with the gradients accumulated, so the optimiser still takes one step per batch of
    ``batch_size``; only BatchNorm then sees micro-batch statistics. ``log`` is told. Under torchrun
    a rank cannot redo its step alone without desynchronising DDP, so there it stops with the message.

    ``checkpoint``: a file written after every epoch (by rank 0); when it exists at the start, the
    run resumes from it and ends with the weights and history of an uninterrupted run (CPU). A
    checkpoint of other settings or pixels is refused (bdgf_core/train_checkpoint.py).
    """
    cfg = config or BDGFConfig()
    ctx = dist_ctx or SINGLE
    check_batch(cfg.batch_size, ctx)
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
    va_src, va_labels, va_given = None, None, 0
    if val is not None:
        va_rows, va_cols, va_labels = _check_pixels("validation pixels", val, shape, n_classes)
        va_given = len(va_labels)
        keep = validation_subset(va_labels, val_cap, cfg.seed)
        va_rows, va_cols, va_labels = va_rows[keep], va_cols[keep], va_labels[keep]
        if len(va_labels):
            va_src = _PatchSource(images, cfg.patch, va_rows, va_cols, dev)
            va_src.padded = tr_src.padded  # same images: share the padded copies

    torch.manual_seed(cfg.seed)  # weights
    gen = np.random.default_rng(cfg.seed)  # batch order
    net = BDGFNet(spectral.shape[0], sar.shape[0], 0 if features is None else features.shape[0], n_classes,
                  cfg).to(dev)
    if net.edge is not None:  # edge-aware patches: the same-class distances of this image (network/adaptive.py)
        net.edge.set_tau(calibrate([spectral, sar], tr_rows, tr_cols))
    ddp = None
    if ctx.enabled:
        net = sync_batchnorm(net, device)
        # The loss (eq. 29) is inside the wrapped forward: its temperature network is then part of
        # what DDP sees, and parameters an ablation leaves unused are found, not waited for.
        ddp = torch.nn.parallel.DistributedDataParallel(
            _NetWithLoss(net), device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=True)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.lr_milestones()), gamma=cfg.gamma)
    labels_t = torch.from_numpy(tr_labels).to(dev)
    history: dict = {"loss": [], "val_oa": [], "val_loss": [], "lr": [], "terms": {}, "best_epoch": None,
                     "best_val_oa": None,
                     "val_pixels": 0 if va_labels is None else len(va_labels), "val_pixels_given": va_given,
                     "seconds": 0.0, "val_seconds": 0.0, "warnings": []}
    best_state, best_oa = None, -1.0
    start_epoch, digest = 0, None
    if checkpoint:
        # shapes and sums of the normalised images: other data on the same grid is another run
        shapes = [None if im is None else [list(im.shape), float(np.sum(im, dtype=np.float64))] for im in images]
        val_px = [] if va_src is None else [va_rows, va_cols, va_labels]
        digest = train_checkpoint.fingerprint(cfg, shapes, [tr_rows, tr_cols, tr_labels, *val_px])
        state = train_checkpoint.load(checkpoint, digest) if ctx.is_main and Path(checkpoint).is_file() else None
        state = broadcast_object(state, ctx)  # rank 0 read it (possibly on its node only)
        if state is not None:
            train_checkpoint.restore(state, net, opt, sched, gen)
            start_epoch, history, best_oa = state["epoch"], state["history"], state["best_oa"]
            best_state = state["best"]
            if progress is not None:
                progress(start_epoch / cfg.epochs, f"resumed after epoch {start_epoch} from the checkpoint")
    n = len(tr_labels)
    # A last batch of one sample (of fewer samples than processes) would break BatchNorm in training
    # mode (leave a process without samples): fold it into the previous one.
    starts = list(range(0, n, cfg.batch_size))
    if len(starts) > 1 and n - starts[-1] < max(2, ctx.world):
        starts.pop()
    # Out-of-memory retries (bdgf_core.oom): under torchrun the floor is the batch itself (no retry).
    floor = 2 if not ctx.enabled else cfg.batch_size
    train_retry = OomRetry(cfg.batch_size, floor, str(dev), log, "training")
    eval_retry = OomRetry(cfg.batch_size, 1, str(dev), log, "validation")

    def _step(idx: np.ndarray, micro: int, scale: float) -> tuple[float, dict[str, float]]:
        """Forward and backward of one batch as micro-batches of at most ``micro``; the batch's mean loss and parts."""
        opt.zero_grad(set_to_none=True)
        spans = micro_spans(len(idx), max(2, micro))
        loss_sum = 0.0
        part_sums: dict[str, float] = {}
        for k, (a, b) in enumerate(spans):
            sub = idx[a:b]
            spec_b, sar_b, dif_b = tr_src.batch(sub)
            # issue 15's edge augmentations, drawn per global batch: the same under torchrun and when resumed
            spec_b, sar_b, dif_b = augment_batch((spec_b, sar_b, dif_b), sub, batch, tr_labels, tr_src.batch,
                                                 cfg.flips, cfg.mix_share, (cfg.seed, epoch, batch[0]))
            if len(sub) < 2 and not ctx.enabled:  # a single training pixel in all: BatchNorm needs 2 samples
                spec_b, sar_b = spec_b.repeat(2, 1, 1, 1), sar_b.repeat(2, 1, 1, 1)
                dif_b = None if dif_b is None else dif_b.repeat(2, 1, 1, 1)
                y = labels_t[sub].repeat(2)
            else:
                y = labels_t[sub]
            sync = ddp.no_sync() if ddp is not None and k < len(spans) - 1 else nullcontext()
            with sync:
                if ddp is not None:
                    with _autocast(dev):
                        loss = ddp(spec_b, sar_b, dif_b, y)
                    parts = ddp.module.parts
                else:
                    with _autocast(dev):
                        out = net(spec_b, sar_b, dif_b)
                    loss, parts = net.loss(out, y)  # loss in fp32 (the mutual module casts)
                # one span: exactly the full-batch step; several: each weighted by its share
                (loss * (scale if len(spans) == 1 else scale * len(sub) / len(idx))).backward()
            loss_sum += float(loss.detach()) * len(sub)
            for k_, v in parts.items():
                part_sums[k_] = part_sums.get(k_, 0.0) + v * len(sub)
        return loss_sum / len(idx), {k_: v / len(idx) for k_, v in part_sums.items()}

    t0 = time.perf_counter()
    seconds_before = history.get("seconds", 0.0)  # a resumed run counts the epochs before the interruption
    ends: list[float] = []  # end of each epoch of this run, seconds since t0 (for the time estimate)
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        order = gen.permutation(n)
        total, count = 0.0, 0
        term_sums: dict[str, float] = {}
        for i, s in enumerate(starts):
            stop = cancelled is not None and cancelled()
            if ctx.enabled:  # one process cancelled: all stop at the same step
                stop = not all_ranks_agree(not stop, ctx)
            if stop:
                raise Cancelled()
            batch = order[s:starts[i + 1] if i + 1 < len(starts) else n]
            idx = rank_slice(batch, ctx)
            scale = loss_scale(len(idx), len(batch), ctx)  # DDP averages the gradients
            batch_loss, parts = train_retry.run(lambda micro: _step(idx, micro, scale))
            total += batch_loss * len(idx)
            for k, v in parts.items():
                term_sums[k] = term_sums.get(k, 0.0) + v * len(idx)
            opt.step()  # once per batch, after every micro-batch succeeded
            count += len(idx)
        names = sorted(term_sums)
        if ctx.enabled:  # the epoch's loss and its parts over all processes' samples
            t = torch.tensor([total, float(count), *(term_sums[k] for k in names)], dtype=torch.float64, device=dev)
            torch.distributed.all_reduce(t)
            total, count = float(t[0]), int(t[1])
            term_sums = {k: float(v) for k, v in zip(names, t[2:])}
        for k in names:  # per-epoch means: the temperatures and KL terms of eqs. 27-28, the CE terms
            history.setdefault("terms", {}).setdefault(k, []).append(term_sums[k] / count)
        history["lr"].append(opt.param_groups[0]["lr"])
        sched.step()
        history["loss"].append(total / count)
        msg = f"epoch {epoch + 1}/{cfg.epochs}: loss {total / count:.4f}"
        if va_src is not None:
            v0 = time.perf_counter()
            oa, va_loss = _accuracy(net, va_src, va_labels, eval_retry)
            history["val_seconds"] = history.get("val_seconds", 0.0) + time.perf_counter() - v0
            history["val_oa"].append(oa)
            history.setdefault("val_loss", []).append(va_loss)
            msg += f", validation OA {oa:.4f}"
            if better_epoch(oa, va_loss, best_oa, history.get("best_val_loss", float("inf"))):
                best_oa, history["best_epoch"], history["best_val_loss"] = oa, epoch, va_loss
                best_state = copy.deepcopy(net.state_dict())
        history["seconds"] = seconds_before + time.perf_counter() - t0
        ends.append(time.perf_counter() - t0)
        if log is not None and ctx.is_main and len(ends) == 2 and epoch + 1 < cfg.epochs:
            log(estimate_training(ends, cfg.epochs - start_epoch, str(dev)))
        if checkpoint and ctx.is_main:
            train_checkpoint.save(checkpoint, net, opt, gen, epoch + 1, history, best_state, best_oa, digest)
        if progress is not None:
            progress((epoch + 1) / cfg.epochs, msg)
    if best_state is not None:
        net.load_state_dict(best_state)
        history["best_val_oa"] = best_oa
    else:
        history["best_epoch"] = cfg.epochs - 1
    history["seconds"] = seconds_before + time.perf_counter() - t0
    history["warnings"] = validation_warnings(history["loss"], history["val_oa"], history["best_epoch"])
    for w in history["warnings"]:
        if log is not None:
            log(w)
    net.eval()
    return net, history


def _windows(block: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """A (C, h+p-1, w+p-1) block as a float32 tensor on ``device`` (no copy when it already is one)."""
    t = torch.as_tensor(np.asarray(block, dtype=np.float32) if not isinstance(block, Tensor) else block)
    return t.to(device=device, dtype=torch.float32)


def predict_block(net: BDGFNet, spectral_block: np.ndarray | Tensor, sar_block: np.ndarray | Tensor,
                  feature_block: np.ndarray | Tensor | None, patch: int, batch_size: int = 1024,
                  share: bool = True) -> np.ndarray:
    """Class probabilities (C, h, w) float32 of the inner pixels of blocks (channels, h+p-1, w+p-1).

    The blocks carry the patch halo (the caller pads at image borders the way training did).
    Pixels go through the net in square tiles of about ``batch_size`` pixels; only one tile's
    patches are materialised at a time. With ``share`` the first-layer convolutions of the raw
    patches are computed once per tile (exactly, see :mod:`bdgf_core.patchconv`) instead of
    once per patch.
    """
    if patch != net.config.patch:
        raise BdgfError(f"the model was trained with patch size {net.config.patch}, not {patch}")
    device = next(net.parameters()).device
    use_dif = net.config.needs_features
    blocks = [_windows(spectral_block, device), _windows(sar_block, device),
              _windows(feature_block, device) if use_dif else None]
    h, w = blocks[0].shape[1] - patch + 1, blocks[0].shape[2] - patch + 1
    if h < 1 or w < 1 or any(b is not None and tuple(b.shape[1:]) != tuple(blocks[0].shape[1:]) for b in blocks):
        raise BdgfError("spectral, SAR and feature blocks must cover the same pixels, with the patch halo")
    net.eval()
    plan = SharedFirstLayers.of(net) if share else None
    th, tw = tile_shape(batch_size, h, w)
    probs = torch.empty(net.n_classes, h, w, dtype=torch.float32)
    with torch.inference_mode(), (plan.installed() if plan is not None else nullcontext()):
        for r in range(0, h, th):
            for c in range(0, w, tw):
                rh, cw = min(th, h - r), min(tw, w - c)
                wins = [None if b is None else b[:, r:r + rh + patch - 1, c:c + cw + patch - 1] for b in blocks]
                batch = [None if x is None else patches(x, patch, channels_last=True) for x in wins]
                if plan is not None:
                    plan.set_tile(wins, batch, rh, cw, patch)
                with _autocast(device):
                    logits = net(*batch).logits
                probs[:, r:r + rh, c:c + cw] = torch.softmax(logits.float(), dim=-1).T.reshape(-1, rh, cw).cpu()
    return probs.numpy()


@torch.inference_mode()
def predict_pixels(net: BDGFNet, spectral: np.ndarray, sar: np.ndarray, features: Optional[np.ndarray],
                   flat: np.ndarray, patch: int, batch_size: Optional[int] = None,
                   progress: Optional[Callable[[float], None]] = None,
                   cancelled: Optional[Callable[[], bool]] = None) -> np.ndarray:
    """Class probabilities (N, C) of the pixels at flat indices of normalised whole images.

    ``batch_size`` None: CPU_MAX_BATCH on the CPU, GPU_BATCH on CUDA. ``progress(fraction)`` after
    each batch; ``cancelled()`` True stops with :class:`Cancelled`."""
    net.eval()
    device = next(net.parameters()).device
    batch_size = batch_size or (GPU_BATCH if device.type == "cuda" else CPU_MAX_BATCH)
    rows, cols = np.divmod(np.asarray(flat, np.int64), spectral.shape[2])
    src = _PatchSource([spectral, sar, features], patch, rows, cols, device)
    out = []

    def chunk(start: int, end: int) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled()
        spec, sr, dif = src.batch(np.arange(start, end))
        with _autocast(device):
            logits = net(spec, sr, dif).logits
        out.append(torch.softmax(logits.float(), 1).cpu().numpy())
        if progress is not None:
            progress(end / rows.size)

    for_each_batch(rows.size, chunk, OomRetry(batch_size, 1, str(device), None, "prediction"))
    return np.concatenate(out) if out else np.empty((0, net.n_classes), np.float32)
