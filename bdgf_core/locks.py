"""One run per output: a lock beside each output file, held for the whole run.

Two runs writing the same output (or resuming from the same checkpoint, which is named after the
model: bdgf_core/atomic.checkpoint_path) would interleave their checkpoints and renames. The
second run is refused at once with a message naming the file and the run that holds it; runs
with different outputs take different locks and work side by side.

The lock is an advisory lock of the operating system on ``.<name>.bdgf-lock`` (``flock`` on
POSIX, ``msvcrt.locking`` on Windows): the system releases it when the process ends however it
ends, so a killed run leaves no lock that blocks the next one (at most the empty file, which the
next run reuses and removes). A run that holds the lock of an output also removes the partial
files earlier runs of that output left when they were killed: nobody else can be writing them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .atomic import PARTIAL_TAG, checkpoint_path
from .errors import BdgfError

LOCK_TAG = ".bdgf-lock"

#: The arguments of each command that name files it writes (the checkpoint goes with --model).
OUTPUT_ARGS = {
    "train-baseline": ("model", "report"),
    "train": ("model", "report"),
    "pretrain": ("model", "features"),
    "classify": ("out", "confidence", "entropy"),
    "assess": ("report", "json", "csv"),
}


def lock_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(f".{dest.name}{LOCK_TAG}")


def outputs_of(command: str, args) -> list[Path]:
    """The output files of a parsed command line (none for commands not in OUTPUT_ARGS)."""
    paths = [getattr(args, a, None) for a in OUTPUT_ARGS.get(command, ())]
    return [Path(p) for p in paths if p]


class _Lock:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = lock_path(dest)
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        for _ in range(10):  # the file may be replaced between open and lock: see below
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                also = " (or resuming its checkpoint)" if checkpoint_path(self.dest).exists() else ""
                raise BdgfError(f"another run{holder} is writing {self.dest}{also}; wait for it to finish, or "
                                "choose another output file")
            # The holder before us may have removed the file after we opened it: a lock on a
            # removed file protects nothing, so check that the name still leads to our file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return
            os.close(fd)
        raise BdgfError(f"could not lock {self.path}: it keeps being replaced; try again")

    def release(self) -> None:
        if self.fd is None:
            return
        if os.name == "posix":  # removed while held: no other run can be locking this file
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        if os.name != "posix":
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _try_lock(fd: int) -> bool:
    try:
        if os.name == "posix":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip() if hasattr(os, "pread") else ""
    except OSError:
        text = ""
    return f" (process {text})" if text.isdigit() else ""


def companions(dest: Path) -> list[Path]:
    """``dest`` and the files a run writes with it: checkpoint, style, JSON twin of a report, run log."""
    return [dest, checkpoint_path(dest), dest.with_suffix(".qml"), dest.with_suffix(".json"),
            dest.with_name(dest.name + ".log")]


def remove_stale_partials(dest: Path) -> list[Path]:
    """Partial files and row-parts folders of ``dest`` and its companions left by killed runs
    (call with the lock held)."""
    removed: list[Path] = []
    if not dest.parent.is_dir():
        return removed
    # A companion's name may be another run's output (a report's .json): only partials whose
    # writer (the pid in the name) is gone are removed.
    # Those of the output and its checkpoint are ours: the lock says no other run writes them.
    found = [p for i, c in enumerate(companions(dest)) for p in c.parent.glob(f".{c.stem}{PARTIAL_TAG}*{c.suffix}*")
             if i < 2 or not _writer_alive(p, c)]
    for p in sorted({*found, *dest.parent.glob(f".{dest.name}.bdgf-parts-*")}):
        with contextlib.suppress(OSError):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _writer_alive(partial: Path, dest: Path) -> bool:
    """Whether the process named in ``partial`` (atomic.partial_path: tag, pid, suffix) still runs."""
    pid = partial.name[len(f".{dest.stem}{PARTIAL_TAG}"):].split(".")[0]
    if not pid.isdigit() or os.name != "posix":
        return True  # not our naming, or no cheap check: leave it
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def hold(dests: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """Lock every destination (refusing the run if another holds one); yield the stale partials removed."""
    held: list[_Lock] = []
    removed: list[Path] = []
    try:
        # one order for all runs; the same file named twice is locked once
        for dest in sorted({Path(os.path.abspath(d)) for d in dests}):
            if not dest.parent.is_dir():
                continue  # the command's own check names the missing folder
            lock = _Lock(dest)
            lock.acquire()
            held.append(lock)
            removed += remove_stale_partials(dest)
        yield removed
    finally:
        for lock in reversed(held):
            lock.release()
