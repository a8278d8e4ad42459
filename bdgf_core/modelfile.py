"""Model files: tensors in safetensors, metadata as JSON in its header. Opening one runs no code.

Every model file of this project, whatever its kind (diffusion model, BDGF classifier, random
forest baseline), is a safetensors file whose header metadata holds one key, ``bdgf``, with a
JSON object that has at least ``format`` (= FORMAT), ``version`` and ``kind``.

Nothing else is accepted: a pickle, a ``torch.save`` archive, a zip or any other file is refused
before a byte of it is interpreted as anything but the safetensors header (a length and JSON),
so no model file can run code. Files written since the checksum was added also carry
``tensors_sha256``, a digest of the tensors (names, dtypes, shapes, bytes), so a file damaged
inside its tensor data is refused too instead of yielding garbage weights.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_output
from .errors import BdgfError

FORMAT = "bdgf-model"
#: 2: BDGF networks with eq. 24's Mamba pass of the diffusion features (more weights than a version-1
#: reader can place); version-1 files still load, with the network they were written with.
VERSION = 2
KINDS = ("diffusion", "bdgf", "baseline", "student")


def save_model(path: str | os.PathLike, kind: str, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` (numpy arrays or torch tensors) and JSON-able ``meta`` atomically."""
    from safetensors.numpy import save_file

    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    arrays = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().cpu().contiguous().numpy()
        arrays[name] = np.ascontiguousarray(t)
    header = {"format": FORMAT, "version": VERSION, "kind": kind, **meta, "tensors_sha256": tensors_digest(arrays)}
    with atomic_output(path, size_hint=sum(a.nbytes for a in arrays.values())) as tmp:
        save_file(arrays, str(tmp), metadata={"bdgf": json.dumps(header)})
    return Path(path)


def read_meta(path: str | os.PathLike) -> dict:
    """Read and check only the JSON metadata of a model file."""
    return _open(path)[1]


def load_model(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Return (tensors as numpy arrays, metadata); refuse anything that is not our format."""
    path, meta = _open(path)
    if kind is not None and meta["kind"] != kind:
        raise BdgfError(f"{path.name} is a {meta['kind']} model, but a {kind} model is needed here; "
                        f"give the file written by the matching step")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # truncated payload, bad offsets...
        raise BdgfError(f"{path.name} is damaged ({exc}); train or download the model again") from None
    want = meta.get("tensors_sha256")
    if want is not None and tensors_digest(tensors) != want:
        raise BdgfError(f"{path.name} is damaged (its weights do not match their checksum); "
                        "train or download the model again")
    return tensors, meta


def tensors_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode("utf-8"))
        h.update(a.tobytes())
    return h.hexdigest()


def _open(path: str | os.PathLike) -> tuple[Path, dict]:
    path = Path(path)
    if not path.is_file():
        raise BdgfError(f"model file {path} does not exist; give the path of a model written by this plugin")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("bdgf")
    except Exception:
        raw = None
    if raw is None:
        raise BdgfError(f"{path.name} is not a BDGF model file (or it is truncated or corrupted); "
                        "give a model written by this plugin's training algorithms")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise BdgfError(f"{path.name} has corrupted metadata; train or download the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise BdgfError(f"{path.name} is not a BDGF model file; give a model written by this plugin")
    if int(meta.get("version", 0)) > VERSION:
        raise BdgfError(f"{path.name} was written by a newer version of BDGF (format {meta['version']}); "
                        "update the plugin")
    return path, meta
