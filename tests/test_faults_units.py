"""Unit tests of the fault handling (issue 18): output locks, stale partials, lack-of-space messages,
the progress pipe. The whole-process faults are in tests/test_faults.py."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bdgf_core import atomic, locks
from bdgf_core.errors import BdgfError, Cancelled
from bdgf_core.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from bdgf_core import locks
with locks.hold([{dest!r}]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(dest: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), dest=str(dest))],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_held_output_refuses_a_second_run_and_a_killed_holder_leaves_no_lock(tmp_path):
    dest = tmp_path / "map.tif"
    p = _holder(dest)
    try:
        with pytest.raises(BdgfError) as err:
            with locks.hold([dest]):
                pass
        assert str(err.value) == (f"another run (process {p.pid}) is writing {dest}; wait for it to finish, or "
                                  "choose another output file")
        with locks.hold([tmp_path / "other.tif"]):  # another output of the same folder: side by side
            pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert locks.lock_path(dest).exists()  # the empty file a killed run leaves...
    with locks.hold([dest]):  # ...does not block: the system released the lock with the process
        assert locks.lock_path(dest).read_text().strip() == str(os.getpid())
    assert not locks.lock_path(dest).exists()  # removed by the run that held it


def test_a_lock_on_a_file_removed_meanwhile_is_taken_again(tmp_path, monkeypatch):
    """Between our open and our lock, the previous holder may remove the lock file: a lock on the
    removed file protects nothing, so the name is checked and the lock taken again."""
    dest = tmp_path / "m.bdgf"
    real_open = os.open
    calls = []

    def racing_open(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if str(path).endswith(locks.LOCK_TAG) and not calls:
            calls.append(path)
            os.unlink(path)  # the previous holder's release, just after our open
        return fd

    monkeypatch.setattr(os, "open", racing_open)
    with locks.hold([dest]):
        assert locks.lock_path(dest).exists()
    assert calls


def test_the_run_holding_an_output_removes_partials_that_killed_runs_left(tmp_path):
    dest = tmp_path / "m.bdgf"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".m.bdgf-partial{dead.pid}.bdgf", tmp_path / f"..m.bdgf.bdgf-partial{dead.pid}.checkpoint",
             tmp_path / f".m.bdgf.bdgf-partial{dead.pid}.log"]
    live = tmp_path / f".m.bdgf.bdgf-partial{os.getppid()}.log"  # a live process's: not ours to remove
    parts = tmp_path / ".m.bdgf.bdgf-parts-0123"
    parts.mkdir()
    for p in [*stale, live]:
        p.write_bytes(b"x")
    with locks.hold([dest]) as removed:
        assert sorted(removed) == sorted([*stale, parts])
    assert live.exists() and not any(p.exists() for p in stale)


def test_no_space_names_the_file_and_the_space_needed(tmp_path, monkeypatch):
    dest = tmp_path / "map.tif"
    monkeypatch.setattr(atomic, "file_size_limit", lambda: None)
    err = atomic.disk_full_error(OSError(errno.ENOSPC, "No space left on device"), dest, 1000, 5 * 2**20)
    assert str(err).startswith(f"the disk is full: could not write {dest}, which needs about 5.0 MB; ")
    assert "free in" in str(err) and "choose an output folder on another disk" in str(err)
    # how safetensors (Rust) says it
    err = atomic.disk_full_error(RuntimeError("I/O error: No space left on device (os error 28)"), dest, 0, None)
    assert "the disk is full" in str(err) and "more than 1 KB" in str(err)
    monkeypatch.setattr(atomic, "file_size_limit", lambda: 2**20)
    err = atomic.disk_full_error(RuntimeError("WriteEncodedTile/Strip() failed."), dest, 2**20 - 100, 3 * 2**20)
    assert "may not write files larger than 1.0 MB" in str(err) and "needs about 3.0 MB" in str(err)
    monkeypatch.setattr(atomic, "file_size_limit", lambda: None)
    assert atomic.disk_full_error(RuntimeError("some other GDAL error"), dest, 10, 100) is None
    assert atomic.disk_full_error(Cancelled(), dest, 10, 100) is None


def test_a_failed_write_leaves_no_partial_and_says_no_space(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "file_size_limit", lambda: None)
    dest = tmp_path / "report.html"
    with pytest.raises(BdgfError, match=f"could not write {dest}, which needs about 2.0 MB"):
        with atomic.atomic_output(dest, size_hint=2 * 2**20) as part:
            part.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_progress_carries_the_message_and_a_closed_pipe_cancels():
    out = io.StringIO()
    rep = Reporter("json", stream=out)
    rep.sub(0.5, 1.0).progress(0.5, "epoch 3/10: loss 0.5")
    assert json.loads(out.getvalue()) == {"event": "progress", "percent": 75.0, "message": "epoch 3/10: loss 0.5"}
    rep = Reporter("json", stream=_ClosedPipe())
    with pytest.raises(Cancelled):
        rep.progress(0.1, "step")
    assert rep.cancelled() and rep.orphaned
    rep.error("cancelled")  # the last word goes nowhere, quietly
    rep.result({"map": "x"})
