"""Epoch checkpoints of BDGF training: an interrupted run resumes and ends where an uninterrupted one would.

What a resumed run needs to continue exactly (CPU): the weights, Adam's moments and step counts,
the epoch reached, the batch-order generator (numpy), PyTorch's global generator (dropout), the
history and the best epoch's weights so far. The learning-rate schedule is a function of the
epoch and is replayed. Written in the project's model-file format (safetensors + JSON, no code),
with a fingerprint of the settings and the training pixels so that a checkpoint of another run
is refused instead of being silently continued.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .errors import BdgfError
from .modelfile import load_model, read_meta, save_model


def fingerprint(config: Any, shapes: list, pixels: list[np.ndarray]) -> str:
    """A digest of what makes two runs the same run: the configuration, the image shapes, the pixels."""
    h = hashlib.sha256(json.dumps({"config": asdict(config), "shapes": shapes}, sort_keys=True,
                                  default=str).encode())
    for a in pixels:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


def save(path: str, net: torch.nn.Module, opt: torch.optim.Optimizer, gen: np.random.Generator, epoch: int,
         history: dict, best_state: Optional[dict], best_oa: float, digest: str) -> None:
    """Write the state after ``epoch`` epochs (atomically: an interruption while writing keeps the last one)."""
    tensors: dict[str, Any] = {f"net.{k}": v for k, v in net.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            t = torch.as_tensor(v)
            tensors[f"opt.{i}.{k}"] = t.reshape(1) if t.dim() == 0 else t
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {"checkpoint": {"epoch": epoch, "fingerprint": digest, "best_oa": best_oa, "history": history,
                           "numpy_rng": _jsonable(gen.bit_generator.state)}}
    save_model(path, "bdgf", tensors, meta)


def load(path: str, digest: str) -> dict:
    """The state saved by :func:`save`, as plain objects (for broadcasting to other processes)."""
    meta = read_meta(path)
    ck = meta.get("checkpoint")
    if ck is None or ck.get("fingerprint") != digest:
        raise BdgfError(f"the checkpoint {Path(path).resolve()} belongs to another training run (other data or "
                        "settings); delete it to start afresh, or rerun with that run's settings")
    tensors, _ = load_model(path, "bdgf")
    t = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
    opt: dict[int, dict] = {}
    for name, v in t.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            opt.setdefault(int(i), {})[k] = v.reshape(()) if k == "step" else v
    return {"epoch": int(ck["epoch"]), "net": {k[4:]: v for k, v in t.items() if k.startswith("net.")},
            "best": best or None, "opt": opt, "torch_rng": t["torch_rng"], "numpy_rng": ck["numpy_rng"],
            "history": ck["history"], "best_oa": float(ck["best_oa"])}


def restore(state: dict, net: torch.nn.Module, opt: torch.optim.Optimizer, sched, gen: np.random.Generator
            ) -> None:
    """Put a loaded state back into the run's objects; the schedule is replayed to the epoch."""
    net.load_state_dict(state["net"])
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended, a replay
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(state["epoch"]):
            sched.step()
    params = [p for g in opt.param_groups for p in g["params"]]  # the state's indices, in order
    moments = {i: {k: v if k == "step" else v.reshape(params[i].shape) for k, v in st.items()}
               for i, st in state["opt"].items()}  # scalar parameters were saved as shape (1,)
    opt.load_state_dict({"state": moments, "param_groups": opt.state_dict()["param_groups"]})
    gen.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
