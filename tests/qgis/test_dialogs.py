"""The dialogs open in QGIS Desktop's widgets (not only through processing.run).

The session's QGIS runs without a GUI (pytest.ini), so a child pytest starts QGIS with its GUI
(offscreen) and pytest-qgis's ``qgis_iface`` and opens every dialog: gui/dialogs_in_desktop.py.
A dialog that kills QGIS (signal 11, as Train BDGF did in 3.22 with the rasters loaded first)
fails this test with the signal, instead of ending the whole session.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_every_dialog_opens_with_any_mix_of_layers_in_qgis_desktop(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "pytest_qgis", "-o", "addopts=-p no:cacheprovider",
         "--rootdir", str(HERE), str(HERE / "gui" / "dialogs_in_desktop.py")],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    if proc.returncode < 0 or proc.returncode in (134, 139):
        code = -proc.returncode if proc.returncode < 0 else proc.returncode - 128
        raise AssertionError(f"QGIS died with signal {signal.Signals(code).name} opening a dialog:\n{tail}")
    assert proc.returncode == 0, tail
    assert "7 passed" in proc.stdout, tail
