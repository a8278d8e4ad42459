"""The bridge between QGIS Processing and the BDGF runtime, which runs in a subprocess.

QGIS's own Python never imports torch nor ``bdgf_core``: every algorithm runs
``python -m bdgf_core COMMAND --progress json ...`` with the runtime's interpreter and reads
one JSON object per line from its standard output:

    {"event": "progress", "percent": 37.5}
    {"event": "info", "message": "..."}
    {"event": "warning", "message": "..."}
    {"event": "result", "outputs": {...}}
    {"event": "error", "message": "..."}

Other standard output lines and all standard error lines are shown in the log. Cancelling
terminates the child (SIGTERM, then SIGKILL after a second) and removes the partial files it
may have left beside the known outputs. Whatever the child does (crash, out-of-memory kill),
QGIS gets a ``QgsProcessingException``, never a crash.

The runtime ends with QGIS (issue 18): its standard input is a pipe the bridge never writes and
holds open until the run ends; when QGIS ends, however it ends, the pipe closes and the runtime
cancels itself (``BDGF_LIFELINE=stdin``, bdgf_core/lifeline.py; on Linux also the parent-death
signal). That signal fires when the *thread* that started the child ends: the thread that calls
:func:`run_process` waits in it until the child has ended, so it always outlives the child.

Progress messages of the runtime (``epoch 3/30: loss 0.41``) are shown as the dialog's progress
text with the elapsed time and an estimate of the time left, at most twice a second, and in the
log at most every ``LOG_EVERY_S`` seconds (the last one at the end), so a fast loop does not flood it.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess  # nosec B404 - argv lists only, never a shell
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsSettings

SETTING_PYTHON = "BDGF_PYTHON"
ENV_PYTHON = "BDGF_PYTHON"
ENV_LIFELINE = "BDGF_LIFELINE"  # must match bdgf_core.lifeline
ENV_PARENT_PID = "BDGF_PARENT_PID"
PARTIAL_TAG = ".bdgf-partial"  # must match bdgf_core.atomic.PARTIAL_TAG
POLL_S = 0.1
TERMINATE_GRACE_S = 1.0
STDERR_TAIL = 20
CANCELLED_EXIT = 130
TEXT_EVERY_S = 0.5
LOG_EVERY_S = 10.0
ETA_AFTER_S = 3.0  # no estimate of the time left before this much has run, nor below 1 %

SETTINGS_HINT = ("run `make install` in the plugin's folder (Debian/Ubuntu), or set the BDGF_PYTHON setting "
                 "(Settings > Options > Processing > Providers > BDGF) or environment variable to the Python "
                 "interpreter of an environment where `python -m bdgf_core --help` works")
#: What to install, said when no runtime is found (the first use of a plugin installed from a zip)
INSTALL_HINT = ("The runtime is a separate Python environment with PyTorch, numpy, scipy, scikit-learn, "
                "safetensors and GDAL's Python bindings. On Debian or Ubuntu: `make setup` in the plugin's "
                "folder creates it as .venv and BDGF finds it. Elsewhere (Windows, macOS; untested) conda "
                "gives all of them: `conda create -n bdgf -c conda-forge python=3.11 gdal pytorch scipy "
                "scikit-learn safetensors`, then point BDGF_PYTHON at that environment's python "
                "(Windows: ...\\envs\\bdgf\\python.exe, macOS: .../envs/bdgf/bin/python). The plugin "
                "folder must be importable by it: BDGF adds it to PYTHONPATH itself.")


def plugin_dir() -> Path:
    """The plugin's folder, resolved through symlinks (so a linked checkout finds its .venv)."""
    return Path(__file__).resolve().parent.parent


def _venv_python(root: Path) -> Path:
    if os.name == "nt":
        return root / ".venv" / "Scripts" / "python.exe"
    return root / ".venv" / "bin" / "python"


def _setting_value() -> str:
    """The provider setting BDGF_PYTHON ('' when unset or Processing is not loaded)."""
    value = None
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        value = ProcessingConfig.getSetting(SETTING_PYTHON)
    except Exception:  # Processing not loaded (tests, plain scripts)
        value = None
    if not value:
        value = QgsSettings().value(f"Processing/Configuration/{SETTING_PYTHON}", "")
    return str(value or "").strip()


def find_python() -> str:
    """The runtime's interpreter: the BDGF_PYTHON setting, the BDGF_PYTHON variable, the venv.

    The interpreter path is not resolved through symlinks: a venv's ``bin/python`` is usually
    a link to the system Python, and only the unresolved path selects the venv.
    """
    for origin, value in (("the BDGF_PYTHON setting", _setting_value()),
                          ("the BDGF_PYTHON environment variable", os.environ.get(ENV_PYTHON, "").strip())):
        if value:
            if not os.path.isfile(value) or not os.access(value, os.X_OK):
                raise QgsProcessingException(
                    f"{origin} points to {value}, which is not an executable file; "
                    f"correct it or clear it, then {SETTINGS_HINT}")
            return value
    venv = _venv_python(plugin_dir())
    if venv.is_file():
        return str(venv)
    raise QgsProcessingException(f"The BDGF runtime was not found (no {venv}, and BDGF_PYTHON is not set). "
                                 f"{INSTALL_HINT} Then {SETTINGS_HINT}.")


def child_env(python: str) -> Dict[str, str]:
    """Environment of the runtime: plugin dir first on PYTHONPATH, interpreter's bin first on PATH."""
    env = dict(os.environ)
    root = str(plugin_dir())
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    bindir = os.path.dirname(os.path.abspath(python))
    env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    # A PYTHONHOME meant for QGIS's embedded Python would break another interpreter.
    env.pop("PYTHONHOME", None)
    return env


def partial_files(dest: str) -> List[Path]:
    """Partial files of ``dest`` a runtime may leave when killed: ``.{stem}.bdgf-partial*{suffix}``,
    and the row-parts folders of a multi-process classification, ``.{name}.bdgf-parts-*``."""
    path = Path(dest)
    if not path.name or not path.parent.is_dir():
        return []
    return sorted([*path.parent.glob(f".{path.stem}{PARTIAL_TAG}*{path.suffix}"),
                   *path.parent.glob(f".{path.name}.bdgf-parts-*")])


def remove_partials(paths: Iterable[Optional[str]], feedback: Optional[QgsProcessingFeedback] = None) -> List[Path]:
    """Delete the partial files of each destination in ``paths``; return what was removed."""
    removed = []
    for dest in paths:
        if not dest:
            continue
        for p in partial_files(str(dest)):
            with contextlib.suppress(OSError):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
                if feedback is not None:
                    feedback.pushDebugInfo(f"Removed partial file {p}")
    return removed


def _reader(stream, kind: str, q: "queue.Queue") -> None:
    try:
        for raw in iter(stream.readline, ""):
            q.put((kind, raw.rstrip("\r\n")))
    except (OSError, ValueError):
        pass
    finally:
        q.put((kind, None))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"was killed by {name}"
        if -code == getattr(signal, "SIGKILL", 9):
            text += " (often the system killing it for lack of memory: try a smaller memory budget or scene)"
        elif -code == getattr(signal, "SIGSEGV", 11):
            text += " (a crash in native code)"
        return text
    return f"exited with code {code}"


def format_duration(seconds: float) -> str:
    """45 s, 3 min 05 s, 1 h 02 min."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Run:
    """State of one child process while its output is read."""

    def __init__(self, feedback: QgsProcessingFeedback, clock=time.monotonic) -> None:
        self.feedback = feedback
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.stderr_tail: collections.deque = collections.deque(maxlen=STDERR_TAIL)
        self.clock = clock
        self.started = clock()
        self.text_at = self.log_at = -1e9
        self.unlogged: Optional[str] = None  # the last progress message not yet in the log
        self.first: Optional[tuple] = None  # (time, percent) of the first progress: start-up is not work

    def progress_text(self, percent: float, message: str) -> None:
        """The dialog's progress text (rate-limited), and now and then the message in the log."""
        now = self.clock()
        elapsed = now - self.started
        if self.first is None:
            self.first = (now, percent)
        if message:
            self.unlogged = message
            if now - self.log_at >= LOG_EVERY_S:
                self.log_at = now
                self.unlogged = None
                self.feedback.pushInfo(f"{message} ({format_duration(elapsed)} elapsed)")
        if now - self.text_at < TEXT_EVERY_S and percent < 100.0:
            return
        self.text_at = now
        timing = f"{format_duration(elapsed)} elapsed"
        t0, p0 = self.first
        if now - t0 >= ETA_AFTER_S and percent - p0 >= 1.0 and percent < 100.0:  # the rate since work began
            timing += f", about {format_duration((now - t0) * (100.0 - percent) / (percent - p0))} left"
        text = f"{message} ({timing})" if message else f"{percent:.0f} % ({timing})"
        setter = getattr(self.feedback, "setProgressText", None)
        if setter is not None:
            setter(text)

    def flush_log(self) -> None:
        """The last progress message into the log (the final epoch's loss and accuracy)."""
        if self.unlogged:
            self.feedback.pushInfo(f"{self.unlogged} ({format_duration(self.clock() - self.started)} elapsed)")
            self.unlogged = None

    def handle(self, kind: str, line: str) -> None:
        fb = self.feedback
        if kind == "stderr":
            self.stderr_tail.append(line)
            fb.pushDebugInfo(line)
            return
        event = None
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
        if not isinstance(event, dict) or "event" not in event:
            if line.strip():
                fb.pushConsoleInfo(line)
            return
        name = event.get("event")
        if name == "progress":
            try:
                percent = max(0.0, min(100.0, float(event.get("percent", 0.0))))
            except (TypeError, ValueError):
                return
            fb.setProgress(percent)
            self.progress_text(percent, str(event.get("message") or "").strip())
        elif name == "info":
            fb.pushInfo(str(event.get("message", "")))
        elif name == "warning":
            fb.pushWarning(str(event.get("message", "")))
        elif name == "result":
            self.flush_log()
            outputs = event.get("outputs")
            self.result = dict(outputs) if isinstance(outputs, dict) else {}
        elif name == "error":
            self.error = str(event.get("message", "")).strip() or "unknown error"
        else:
            fb.pushDebugInfo(line)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, wait up to a second, then SIGKILL it."""
    if proc.poll() is not None:
        return
    group = os.name != "nt"
    with contextlib.suppress(OSError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # Kill what is left of the group too (workers the runtime may have started).
    with contextlib.suppress(OSError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def run_process(argv: Sequence[str], feedback: Optional[QgsProcessingFeedback], *,
                outputs: Iterable[Optional[str]] = (), cwd: Optional[str] = None,
                env: Optional[Dict[str, str]] = None, label: str = "The BDGF runtime") -> Dict[str, Any]:
    """Run ``argv`` (no shell), relay its JSON-lines events to ``feedback``, return its outputs.

    ``outputs`` are the destination files of the run: their partial files are removed when the
    run is cancelled or fails. Raises ``QgsProcessingException`` on cancel, error or crash.
    """
    if feedback is None:
        feedback = QgsProcessingFeedback()
    outputs = [o for o in outputs if o]
    feedback.pushDebugInfo("Running: " + " ".join(_quote(a) for a in argv))
    kwargs: Dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # own process group: cancel reaches its workers
    # The lifeline: a pipe as stdin, never written, closed by the system when QGIS ends.
    env = dict(os.environ if env is None else env)
    env.update({ENV_LIFELINE: "stdin", ENV_PARENT_PID: str(os.getpid())})
    try:
        proc = subprocess.Popen(  # nosec B603 - argv list built by the plugin, no shell
            list(argv), cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
    except OSError as exc:
        raise QgsProcessingException(f"{label} could not be started ({argv[0]}: {exc.strerror or exc}); "
                                     f"{SETTINGS_HINT}.") from None

    q: "queue.Queue" = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(proc.stdout, "stdout", q), daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, "stderr", q), daemon=True)]
    for t in readers:
        t.start()
    run = _Run(feedback)
    cancelled = False
    open_streams = 2
    exited_at = None
    try:
        while open_streams:
            if not cancelled and feedback.isCanceled():
                cancelled = True
                feedback.pushInfo(f"Cancelling: stopping {label} (pid {proc.pid})")
                _terminate(proc)
            try:
                kind, line = q.get(timeout=POLL_S)
            except queue.Empty:
                if proc.poll() is not None:
                    # Workers the child left behind may hold the pipes open: do not wait for them.
                    exited_at = exited_at or time.monotonic()
                    if cancelled or time.monotonic() - exited_at > 2.0:
                        break
                continue
            if line is None:
                open_streams -= 1
            elif not cancelled or line.startswith('{"event": "error"'):
                run.handle(kind, line)  # after a cancel: only the child's last word (how to resume)
        while proc.poll() is None:
            if not cancelled and feedback.isCanceled():
                cancelled = True
                _terminate(proc)
            time.sleep(POLL_S)
    except BaseException:
        _terminate(proc)
        remove_partials(outputs, feedback)
        raise
    finally:
        for stream in (proc.stdout, proc.stderr, proc.stdin):  # stdin last: the child has ended
            with contextlib.suppress(Exception):
                stream.close()

    code = proc.returncode
    if cancelled or (code == CANCELLED_EXIT and run.error is None):
        remove_partials(outputs, feedback)
        # the runtime's own account may say how to resume (a checkpoint was kept)
        rest = (run.error or "").partition("no output was written.")[2].strip()
        if rest:
            rest = " " + rest.replace("the same command", "running it again with the same settings")
        raise QgsProcessingException(f"Cancelled: {label} was stopped before it finished; "
                                     f"no output was written.{rest}")
    if code != 0:
        remove_partials(outputs, feedback)
        if run.error:
            raise QgsProcessingException(run.error)
        tail = "\n".join(run.stderr_tail).strip()
        message = f"{label} {_describe_exit(code)} without reporting an error."
        if tail:
            message += f" Last messages:\n{tail}"
        raise QgsProcessingException(message)
    if run.result is None:
        raise QgsProcessingException(f"{label} finished without reporting its outputs "
                                     "(is the plugin's bdgf_core the version this plugin expects?).")
    feedback.setProgress(100.0)
    return run.result


def runtime_argv(python: str, command: str, args: Sequence[str], processes: int = 1) -> List[str]:
    """The runtime's command line; with processes > 1 under torchrun on this machine (data parallel)."""
    launcher = [python, "-m", "bdgf_core"]
    if processes > 1:
        launcher = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(processes)}",
                    "-m", "bdgf_core"]
    return [*launcher, command, "--progress", "json", *[str(a) for a in args]]


def run_command(command: str, args: Sequence[Any], feedback: Optional[QgsProcessingFeedback],
                outputs: Iterable[Optional[str]] = (), processes: int = 1) -> Dict[str, Any]:
    """Run ``bdgf_core COMMAND --progress json ARGS`` with the runtime's interpreter."""
    python = find_python()
    argv = runtime_argv(python, command, [str(a) for a in args], processes)
    return run_process(argv, feedback, outputs=outputs, cwd=str(plugin_dir()), env=child_env(python),
                       label=f"The BDGF runtime ({command})")


def _quote(arg: str) -> str:
    arg = str(arg)
    return arg if arg and all(c.isalnum() or c in "-_./=:,+@" for c in arg) else json.dumps(arg)


__all__ = ["find_python", "run_command", "run_process", "remove_partials", "partial_files", "plugin_dir",
           "child_env", "runtime_argv", "SETTING_PYTHON"]
