"""Atomic outputs: write to a partial file beside the destination, rename when complete."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import BdgfError

PARTIAL_TAG = ".bdgf-partial"


def partial_path(dest: str | os.PathLike) -> Path:
    """The temporary sibling a run writes before renaming it to ``dest``.

    The extension is kept last so that GDAL picks the driver from it.
    """
    dest = Path(dest)
    return dest.with_name(f".{dest.stem}{PARTIAL_TAG}{os.getpid()}{dest.suffix}")


def checkpoint_path(model: str | os.PathLike) -> Path:
    """The hidden checkpoint a long run keeps beside its model until the model is written."""
    model = Path(model)
    return model.with_name(f".{model.name}.checkpoint")


def check_writable(dest: str | os.PathLike) -> Path:
    """Fail early, before heavy work, when ``dest`` cannot be written."""
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BdgfError(f"cannot create the folder {parent} for {dest.name} ({exc.strerror}); "
                            "choose an output path in a writable folder") from None
    if not parent.is_dir():
        raise BdgfError(f"{parent} is a file, not a folder; choose an output path in a writable folder")
    if not os.access(parent, os.W_OK):
        raise BdgfError(f"the folder {parent} is not writable; choose an output path in a writable folder")
    if dest.is_dir():
        raise BdgfError(f"the output path {dest} is a folder; give a file name")
    return dest


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a partial path to write; rename it to ``dest`` on success, delete it on failure."""
    dest = check_writable(dest)
    tmp = partial_path(dest)
    # GDAL keeps what GeoTIFF cannot hold (category names) in a sidecar that moves with the file.
    sidecars = [(tmp.with_name(tmp.name + ext), dest.with_name(dest.name + ext)) for ext in (".aux.xml",)]
    try:
        yield tmp
        _default_mode(tmp)
        os.replace(tmp, dest)
        for s, d in sidecars:
            if s.exists():
                os.replace(s, d)
    except BaseException:
        for p in [tmp] + [s for s, _ in sidecars]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise


def _default_mode(path: Path) -> None:
    """Give files that libraries create private (0600) the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


def remove_partials(dest: str | os.PathLike) -> list[Path]:
    """Delete partial files of ``dest`` left by a process that was killed (used by the bridge)."""
    dest = Path(dest)
    removed = []
    for p in dest.parent.glob(f".{dest.stem}{PARTIAL_TAG}*{dest.suffix}*"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
