"""The runtime ends with the program that started it: QGIS, qgis_process, or a torchrun agent.

Killed with SIGKILL, a parent cannot stop its child; before this module the runtime went on
computing until its next progress line met the closed pipe (issue 18). Three watches, each of
which ends the run the way a cancel does (SIGTERM: no output, the checkpoint kept):

* **stdin** (every platform): the QGIS bridge starts the runtime with a pipe as standard input
  that it never writes and that only closes when the bridge's process ends, however it ends.
  A thread reads it; end of file means the parent is gone. Only on when the bridge asks for it
  (``BDGF_LIFELINE=stdin``): a user's terminal or ``< /dev/null`` must not cancel a run.
  torchrun workers inherit the agent's standard input, so they watch the same pipe.
* **parent-death signal** (Linux): ``prctl(PR_SET_PDEATHSIG, SIGTERM)``. The kernel sends it when
  the *thread* that started the process ends; the bridge starts the runtime from the thread that
  then waits for it (Processing's worker thread, or qgis_process's main thread), which outlives it.
  In a torchrun worker it ties the worker to its agent, so killing the agent (as the bridge's
  SIGKILL after a cancel does; the workers run in sessions of their own) stops the workers too.
* **parent pid** (POSIX): a thread checks every half second that the parent is still the one the
  process started with (a process whose parent dies is given another one).

Once a watch fires, the run has ``GRACE_S`` seconds to cancel cleanly (the SIGTERM handler runs
between Python bytecodes; a long native call delays it); then the process exits at once with
the cancel's exit code. Its partial files (hidden names) are removed by the next run of the
same outputs (bdgf_core/locks.py); the checkpoint is written atomically and so stays whole.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Optional

ENV_LIFELINE = "BDGF_LIFELINE"  # "stdin": the parent holds our standard input open while it lives
ENV_PARENT_PID = "BDGF_PARENT_PID"  # the bridge's pid: a parent already gone at start-up is seen
GRACE_S = 5.0
POLL_S = 0.5
EXIT_CANCELLED = 130
PR_SET_PDEATHSIG = 1

_state = {"fired": None}


def _torchrun_worker() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def install() -> list[str]:
    """Start the watches that apply to this process; return their names (for tests and logs).

    Nothing is watched in a process started from a terminal by hand (no ``BDGF_LIFELINE`` and
    not a torchrun worker): ``nohup python -m bdgf_core ... &`` must outlive its shell.
    """
    bridged = os.environ.get(ENV_LIFELINE, "")
    worker = _torchrun_worker()
    if not bridged and not worker:
        return []
    started = []
    expected = os.getppid()  # the bridge, or a launcher between (a wrapper script, torchrun)
    if _set_parent_death_signal():
        started.append("pdeathsig")
    bridge = os.environ.get(ENV_PARENT_PID, "")
    if bridged and bridge.isdigit() and not _alive(int(bridge)):  # gone before the signal was set
        parent_gone(f"the program that started this run (process {bridge}) had already ended")
    if os.name == "posix":
        threading.Thread(target=_watch_parent, args=(expected,), name="bdgf-lifeline-ppid", daemon=True).start()
        started.append("ppid")
    if bridged == "stdin":
        threading.Thread(target=_watch_stdin, name="bdgf-lifeline-stdin", daemon=True).start()
        started.append("stdin")
    return started


def _set_parent_death_signal() -> bool:
    """Linux: SIGTERM when the parent (thread) ends. False where the call does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check; the stdin watch covers it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _watch_parent(expected: int) -> None:
    while os.getppid() == expected:
        time.sleep(POLL_S)
    parent_gone(f"the parent process {expected} ended")


def _watch_stdin() -> None:
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock
    # and can abort the interpreter's shutdown.
    try:
        while os.read(0, 4096):
            pass  # the parent never writes; whatever comes is ignored
    except OSError:
        pass
    parent_gone("standard input closed: the program that started this run ended")


def parent_gone(reason: str) -> None:
    """Cancel the run as SIGTERM would, then make sure the process ends within GRACE_S."""
    if _state["fired"] is not None:
        return
    _state["fired"] = reason
    threading.Thread(target=_exit_after_grace, name="bdgf-lifeline-grace", daemon=True).start()
    if os.name == "posix":
        os.kill(os.getpid(), signal.SIGTERM)  # runs the Reporter's handler: a clean cancel
    else:  # Windows: os.kill(SIGTERM) would terminate at once, without clean-up
        import _thread

        _thread.interrupt_main(signal.SIGTERM)


def _exit_after_grace() -> None:
    time.sleep(GRACE_S)
    os._exit(EXIT_CANCELLED)


def fired() -> Optional[str]:
    """Why the lifeline ended the run (None while the parent lives)."""
    return _state["fired"]
