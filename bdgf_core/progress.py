"""Progress and messages for long work: JSON lines for QGIS, a bar in a terminal, or nothing.

The QGIS bridge reads one JSON object per stdout line:
``{"event": "progress", "percent": 12.5, "message": "epoch 3/30: loss 0.41"}`` (the message only
when the stage gives one), ``{"event": "info"|"warning"|"error", "message": ...}`` and a final
``{"event": "result", "outputs": {...}}``.

When the reader of those lines is gone (the pipe is closed: QGIS ended), the run is cancelled
as by SIGTERM instead of failing at a random write; see also bdgf_core/lifeline.py.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from typing import Any, Callable, TextIO

from .errors import Cancelled


class Reporter:
    """Sends progress and messages; ``sub(a, b)`` maps a stage onto a share of the whole run."""

    def __init__(self, mode: str = "none", stream: TextIO | None = None,
                 lo: float = 0.0, hi: float = 100.0, root: "Reporter | None" = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stdout
        self.lo, self.hi = lo, hi
        self.root = root or self
        self._last_bar = 0.0
        self.cancel_requested = False
        self.orphaned = False
        self.messages: list[str] = [] if root is None else root.messages
        self.rank = 0  # under torchrun: only rank 0 reports; the others report their errors only

    def quiet_rank(self, rank: int) -> "Reporter":
        """Make this (root) reporter the one of a non-main torchrun process: errors only, named by rank."""
        self.rank = rank
        return self

    # -- messages -----------------------------------------------------------------------
    def _emit(self, obj: dict) -> None:
        root = self.root
        if root.orphaned:
            return
        try:
            root.stream.write(json.dumps(obj) + "\n")
            root.stream.flush()
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EINVAL):  # EINVAL: a closed pipe on Windows
                raise
            self._orphan()
            # A progress line comes from inside the work: stop it here. Messages may also come from a
            # clean-up or after the work, where raising would do harm: the flag stops the next step.
            if obj.get("event") == "progress":
                raise Cancelled("the program reading this run's progress ended; no output was written") from None

    def _orphan(self) -> None:
        """Nobody reads stdout any more: stop writing (also at exit) and cancel the run."""
        root = self.root
        root.orphaned = True
        root.cancel_requested = True
        try:  # the interpreter's last flush of stdout would fail again, with a traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, root.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def info(self, message: str) -> None:
        self.messages.append(message)
        if self.root.rank:
            return
        if self.root.mode == "json":
            self._emit({"event": "info", "message": message})
        elif self.root.mode == "bar":
            self._clear_bar()
            print(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        self.messages.append("WARNING: " + message)
        if self.root.rank:
            return
        if self.root.mode == "json":
            self._emit({"event": "warning", "message": message})
        elif self.root.mode in ("bar", "none"):
            self._clear_bar()
            print(f"warning: {message}", file=sys.stderr)

    def error(self, message: str) -> None:
        if self.root.rank:
            message = f"process {self.root.rank}: {message}"
        if self.root.mode == "json":
            self._emit({"event": "error", "message": message})
        else:
            self._clear_bar()
            print(f"error: {message}", file=sys.stderr)

    def result(self, outputs: dict[str, Any]) -> None:
        if self.root.rank:
            return
        if self.root.mode == "json":
            self._emit({"event": "result", "outputs": outputs})
        else:
            self._clear_bar()
            for k, v in outputs.items():
                if v is not None:
                    print(f"{k}: {v}")

    # -- progress -------------------------------------------------------------------------
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress of this stage, ``fraction`` in [0, 1]; checks for cancellation."""
        self.check_cancelled()
        pct = self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0)
        root = self.root
        if root.rank:
            return
        if root.mode == "json":
            event: dict = {"event": "progress", "percent": round(pct, 2)}
            if message:
                event["message"] = str(message)
            self._emit(event)
        elif root.mode == "bar":
            now = time.monotonic()
            if now - root._last_bar > 0.2 or pct >= 100:
                root._last_bar = now
                filled = int(pct / 100 * 30)
                tail = f" {message}" if message else ""
                sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {pct:5.1f}%{tail[:60]:<60}")
                sys.stderr.flush()

    def callback(self) -> Callable[[float, str], None]:
        return lambda f, msg="": self.progress(f, msg)

    def sub(self, a: float, b: float) -> "Reporter":
        """A reporter for the part [a, b] (fractions) of this one's range."""
        span = self.hi - self.lo
        return Reporter(lo=self.lo + span * a, hi=self.lo + span * b, root=self.root)

    def _clear_bar(self) -> None:
        if self.root.mode == "bar" and self.root._last_bar:
            sys.stderr.write("\r" + " " * 100 + "\r")
            self.root._last_bar = 0.0

    # -- cancellation -----------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self.root.cancel_requested

    def check_cancelled(self) -> None:
        if self.root.cancel_requested:
            raise Cancelled()

    def install_signal_handlers(self) -> None:
        """SIGTERM (QGIS cancel) and SIGINT (Ctrl-C) cancel the run cleanly."""

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGTERM and self.root.cancel_requested:
                # already cancelling (the lifeline and the parent-death signal may both send
                # one): a second exception would cut short the clean-up of the first
                return
            self.root.cancel_requested = True
            if signum == signal.SIGTERM:
                # Further SIGTERMs (the parent-death signal and the lifeline both send one) are ignored
                # from now on: at exit Python puts a handler back to the default action, and a late
                # SIGTERM then killed the cancelled run (status -15 instead of 130).
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise Cancelled()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
