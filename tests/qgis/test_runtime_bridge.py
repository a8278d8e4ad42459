"""The runtime bridge against tests/fake_runtime.py: events, errors, crashes, cancel, partial files."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from bdgf_qgis_testing import FAKE_RUNTIME, REPO, RecordingFeedback
from qgis.core import QgsProcessingException

from bdgf_qgis import runtime


def fake(*args: str):
    return [sys.executable, str(FAKE_RUNTIME), *args]


def test_events_reach_feedback_and_result_is_returned(feedback):
    result = runtime.run_process(fake("ok", "4"), feedback)
    assert result == {"map": "/tmp/map.tif", "oa": 91.5, "entropy": None}
    assert feedback.progress[:5] == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert "fake runtime started" in feedback.infos
    assert feedback.warnings == ["a fake warning"]
    assert "plain text line" in feedback.console
    assert "a line on stderr" in feedback.debug


def test_error_event_message_is_the_exception(feedback):
    with pytest.raises(QgsProcessingException) as err:
        runtime.run_process(fake("error", "the SAR raster has 3 rows, the spectral one 40"), feedback)
    assert str(err.value) == "the SAR raster has 3 rows, the spectral one 40"


def test_crash_by_signal_gives_clear_exception(feedback):
    with pytest.raises(QgsProcessingException) as err:
        runtime.run_process(fake("crash"), feedback)
    text = str(err.value)
    assert "SIGKILL" in text and "memory" in text
    assert "stderr line 29" in text  # the tail of stderr is kept...
    assert "stderr line 5\n" not in text  # ...only the last 20 lines


def test_nonzero_exit_without_error_event_shows_stderr_tail(feedback):
    with pytest.raises(QgsProcessingException) as err:
        runtime.run_process(fake("exit", "3"), feedback)
    assert "exited with code 3" in str(err.value)
    assert "RuntimeError: something broke" in str(err.value)


def test_missing_result_is_an_error(feedback):
    with pytest.raises(QgsProcessingException, match="without reporting its outputs"):
        runtime.run_process(fake("noresult"), feedback)


def test_missing_executable_is_an_error(feedback):
    with pytest.raises(QgsProcessingException, match="could not be started"):
        runtime.run_process(["/nonexistent/python", "-m", "bdgf_core"], feedback)


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
def test_cancel_kills_quickly_and_removes_partials(tmp_path: Path, ignore_term):
    dest = tmp_path / "map.tif"
    other = tmp_path / "other.tif"
    feedback = RecordingFeedback()
    args = ["sleep", str(dest)] + (["--ignore-term"] if ignore_term else [])

    def cancel_when_started():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(tmp_path.glob(".map.bdgf-partial*.tif")):
            time.sleep(0.02)
        time.sleep(0.2)
        feedback.cancel()

    # A partial of another run of another output is left alone.
    other_partial = tmp_path / ".other.bdgf-partial1.tif"
    other_partial.write_bytes(b"x")
    threading.Thread(target=cancel_when_started, daemon=True).start()
    with pytest.raises(QgsProcessingException, match="Cancelled") as err:
        runtime.run_process(fake(*args), feedback, outputs=[str(dest), None])
    stopped = time.monotonic()
    assert "Cancelled" in str(err.value)
    assert not list(tmp_path.glob(".map.bdgf-partial*")), "partial file left behind"
    assert other_partial.exists()
    assert 5.0 in feedback.progress
    # Cancel took effect within ~1.5 s of the request (measured from the cancel flag).
    assert stopped - _cancel_time(feedback) < 1.6


@pytest.mark.parametrize("hint", [False, True], ids=["plain", "checkpoint kept"])
def test_cancel_message_says_how_to_resume_when_the_runtime_kept_a_checkpoint(tmp_path: Path, hint):
    dest = tmp_path / "m.bdgf"
    feedback = RecordingFeedback()

    def cancel_when_started():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and 5.0 not in feedback.progress:
            time.sleep(0.02)
        feedback.cancel()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    with pytest.raises(QgsProcessingException) as err:
        runtime.run_process(fake("sleep", str(dest), *(["--resume-hint"] if hint else [])), feedback,
                            outputs=[str(dest)], label="Train BDGF")
    text = str(err.value)
    assert text.startswith("Cancelled: Train BDGF was stopped before it finished; no output was written.")
    assert ("The finished epochs are kept in .m.bdgf.checkpoint: running it again with the same settings "
            "resumes from there" in text) is hint, text


def _cancel_time(feedback):
    # isCanceled() flips exactly when cancel() runs; the bridge logs the moment it noticed.
    return feedback._cancelled_at


@pytest.fixture(autouse=True)
def _stamp_cancel(monkeypatch):
    original = RecordingFeedback.cancel

    def cancel(self):
        self._cancelled_at = time.monotonic()
        original(self)

    monkeypatch.setattr(RecordingFeedback, "cancel", cancel, raising=False)


def test_remove_partials_matches_runtime_naming(tmp_path: Path):
    dest = tmp_path / "model.bdgf"
    keep = [tmp_path / "model.bdgf", tmp_path / ".model.bdgf-partial12.tif", tmp_path / ".modelx.bdgf-partial1.bdgf"]
    gone = [tmp_path / ".model.bdgf-partial12.bdgf", tmp_path / ".model.bdgf-partial999.bdgf"]
    for p in keep + gone:
        p.write_bytes(b"x")
    removed = runtime.remove_partials([str(dest)])
    assert sorted(removed) == sorted(gone)
    assert all(p.exists() for p in keep)


def test_remove_partials_removes_the_row_parts_of_a_killed_multiprocess_classification(tmp_path: Path):
    dest = tmp_path / "map.tif"
    parts = tmp_path / ".map.tif.bdgf-parts-0123456789ab"
    parts.mkdir()
    (parts / "rank1.rows").write_bytes(b"x" * 10)
    other = tmp_path / ".other.tif.bdgf-parts-0123456789ab"
    other.mkdir()
    assert runtime.remove_partials([str(dest)]) == [parts]
    assert not parts.exists() and other.exists()


def test_find_python_order(monkeypatch, tmp_path: Path):
    from qgis.core import QgsSettings

    key = "Processing/Configuration/BDGF_PYTHON"
    settings = QgsSettings()
    saved = settings.value(key, "")
    try:
        settings.setValue(key, "")
        monkeypatch.delenv("BDGF_PYTHON", raising=False)
        venv = REPO / ".venv" / "bin" / "python"
        if venv.exists():
            assert runtime.find_python() == str(venv)
        monkeypatch.setenv("BDGF_PYTHON", sys.executable)
        assert runtime.find_python() == sys.executable
        monkeypatch.setenv("BDGF_PYTHON", str(tmp_path / "missing-python"))
        with pytest.raises(QgsProcessingException, match="BDGF_PYTHON"):
            runtime.find_python()
        settings.setValue(key, sys.executable)
        assert runtime.find_python() == sys.executable  # the setting wins over the variable
    finally:
        settings.setValue(key, saved)


def test_no_runtime_found_tells_what_to_do(monkeypatch, tmp_path: Path):
    from qgis.core import QgsSettings

    key = "Processing/Configuration/BDGF_PYTHON"
    saved = QgsSettings().value(key, "")
    QgsSettings().setValue(key, "")
    try:
        monkeypatch.delenv("BDGF_PYTHON", raising=False)
        monkeypatch.setattr(runtime, "plugin_dir", lambda: tmp_path)
        with pytest.raises(QgsProcessingException) as err:
            runtime.find_python()
        assert "make install" in str(err.value) and "Providers > BDGF" in str(err.value)
    finally:
        QgsSettings().setValue(key, saved)


def test_child_env_and_argv():
    env = runtime.child_env(sys.executable)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(os.path.abspath(sys.executable))
    argv = runtime.runtime_argv("py", "classify", ["--out", "m.tif"])
    assert argv == ["py", "-m", "bdgf_core", "classify", "--progress", "json", "--out", "m.tif"]
    assert runtime.plugin_dir() == REPO


class TextFeedback(RecordingFeedback):
    """Also keeps the dialog's progress text."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list = []

    def setProgressText(self, text):  # noqa: N802
        self.texts.append(text)


def test_the_runtime_gets_a_lifeline_to_the_bridge(feedback):
    """stdin is a pipe the bridge holds open for the whole run (it closes when QGIS ends), and
    the runtime is told to watch it (issue 18); it was /dev/null, at end of file at once."""
    result = runtime.run_process(fake("lifeline"), feedback)
    assert result == {"variable": "stdin", "pipe": True, "open": True, "parent": True}


def test_progress_messages_reach_the_dialog_with_elapsed_time_without_flooding_the_log():
    """issue 17: the runtime's 'epoch n/N: loss' lines become the dialog's progress text (at most
    twice a second) with the elapsed time; the log gets one now and then, and the last one."""
    feedback = TextFeedback()
    runtime.run_process(fake("epochs", "40", "0.03"), feedback)  # 40 messages in about 1.2 s
    assert feedback.texts, "no progress text reached the dialog"
    assert all("epoch" in t and "elapsed" in t for t in feedback.texts), feedback.texts
    assert len(feedback.texts) <= 6, feedback.texts  # rate-limited (and the 100 % one)
    assert feedback.texts[-1].startswith("epoch 40/40: loss 0.0250 (")
    logged = [i for i in feedback.infos if i.startswith("epoch ")]
    assert logged[0].startswith("epoch 1/40") and logged[-1].startswith("epoch 40/40") and len(logged) == 2, logged


def test_progress_text_estimates_the_time_left_from_the_rate_since_work_began():
    clock = [100.0]
    feedback = TextFeedback()
    run = runtime._Run(feedback, clock=lambda: clock[0])
    clock[0] += 30.0  # start-up (imports, reading) is not counted in the rate
    run.handle("stdout", '{"event": "progress", "percent": 10, "message": "epoch 1/10"}')
    assert feedback.texts[-1] == "epoch 1/10 (30 s elapsed)"  # no estimate yet
    clock[0] += 60.0
    run.handle("stdout", '{"event": "progress", "percent": 40, "message": "epoch 4/10"}')
    # 30 % in 60 s: the 60 % left take 2 min
    assert feedback.texts[-1] == "epoch 4/10 (1 min 30 s elapsed, about 2 min 00 s left)"
    clock[0] += 0.1
    run.handle("stdout", '{"event": "progress", "percent": 41}')
    assert len(feedback.texts) == 2  # rate-limited
    clock[0] += 1.0
    run.handle("stdout", '{"event": "progress", "percent": 55}')
    assert feedback.texts[-1].startswith("55 % (1 min 31 s elapsed, about ")
    assert runtime.format_duration(7322) == "2 h 02 min"
