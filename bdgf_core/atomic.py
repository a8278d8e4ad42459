"""Atomic outputs: write to a partial file beside the destination, rename when complete.

The partial file is flushed to the disk (fsync) before the rename, and the folder after it, so
that after a crash or a power cut the final name holds either the previous file or the complete
new one, never a half-written one. A write that fails for lack of space (a full disk, a quota,
the process's file-size limit) ends in one message naming the file and the space it needs.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Iterator, Optional

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
def atomic_output(dest: str | os.PathLike, size_hint: Optional[int] = None) -> Iterator[Path]:
    """Yield a partial path to write; rename it to ``dest`` on success, delete it on failure.

    ``size_hint``: about how many bytes the file takes (an upper bound is fine), for the message
    when the disk is full.
    """
    dest = check_writable(dest)
    tmp = partial_path(dest)
    # GDAL keeps what GeoTIFF cannot hold (category names) in a sidecar that moves with the file.
    sidecars = [(tmp.with_name(tmp.name + ext), dest.with_name(dest.name + ext)) for ext in (".aux.xml",)]
    try:
        yield tmp
        _default_mode(tmp)
        present = [(s, d) for s, d in sidecars if s.exists()]
        for p in [tmp] + [s for s, _ in present]:
            fsync_file(p)  # a full disk with delayed allocation says so only here
        os.replace(tmp, dest)
        for s, d in present:
            os.replace(s, d)
        fsync_dir(dest.parent)
    except BaseException as exc:
        written = max((p.stat().st_size for p in [tmp] if p.exists()), default=0)
        for p in [tmp] + [s for s, _ in sidecars]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        full = disk_full_error(exc, dest, written, size_hint)
        if full is not None:
            raise full from None
        raise


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to the disk (a library may have written it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows has no directory handles to sync)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- lack of space -------------------------------------------------------------------------------

_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# how the libraries that write our files say it: OSError, Rust's io::Error (safetensors), GDAL
_SPACE_TEXT = re.compile(r"no space left|file too large|disk quota|free disk space|os error (28|27|122)\b",
                         re.IGNORECASE)
_SLACK = 1 << 20  # a write fails once less than about a block (a GeoTIFF tile, a tensor) is left


def ignore_file_size_signal() -> None:
    """Make a write past the file-size limit (``ulimit -f``) fail with EFBIG instead of killing
    the process with SIGXFSZ (and a core dump), so that it is reported and cleaned up."""
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def file_size_limit() -> Optional[int]:
    """The process's file-size limit in bytes (None: unlimited, or not a POSIX system)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _mb(n: float) -> str:
    if n < 2**20:
        return f"{max(1, round(n / 2**10))} KB"
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def disk_full_error(exc: BaseException, dest: Path, written: int, size_hint: Optional[int]) -> Optional[BdgfError]:
    """The one-line error for a write of ``dest`` that failed for lack of space, else None.

    Libraries do not always pass the system's error on (GDAL reports "WriteEncodedTile failed"),
    so a failed write is also checked against the space left and the file-size limit.
    """
    if not isinstance(exc, (OSError, RuntimeError)) and type(exc).__name__ != "SafetensorError":
        return None
    code = getattr(exc, "errno", None)
    said = code in _SPACE_ERRNOS or bool(_SPACE_TEXT.search(str(exc)))
    limit = file_size_limit()
    need = max(size_hint or 0, written + 1)
    at_least = "about " if size_hint and size_hint > written else "more than "
    if code == errno.EFBIG or "too large" in str(exc).lower() or "os error 27" in str(exc) or (
            limit is not None and written + _SLACK >= limit):
        if limit is not None:
            return BdgfError(f"could not write {dest}: it needs {at_least}{_mb(need)}, but this process may not "
                             f"write files larger than {_mb(limit)} (its file-size limit, `ulimit -f`); raise the "
                             "limit, or write a smaller output (fewer channels or a smaller area)")
        return BdgfError(f"could not write {dest}: it needs {at_least}{_mb(need)}, more than the file system of "
                         f"{dest.parent} takes in one file; choose a folder on another file system")
    try:
        free = shutil.disk_usage(dest.parent).free
    except OSError:
        free = None
    if said or (free is not None and free < max(_SLACK, need - written)):
        where = f"; {_mb(free)} free in {dest.parent}" if free is not None else ""
        return BdgfError(f"the disk is full: could not write {dest}, which needs {at_least}{_mb(need)}{where}; "
                         "free some space, or choose an output folder on another disk")
    return None


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
