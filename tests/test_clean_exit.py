"""The test session ends cleanly when a reference cycle still holds a GDAL dataset at its end.

pytest-qgis calls exitQgis() at the end of the session, which tears GDAL down; a dataset freed after
that crashed the process ("double free or corruption", exit 134 or 139) with every test passed.
tests/conftest.py collects the cycles first.
"""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_a_dataset_left_in_a_cycle_does_not_crash_the_exit():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(HERE / "leaks" / "leave_a_dataset_cycle.py")],
                          cwd=str(HERE.parent), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]
    assert proc.returncode == 0, f"exit status {proc.returncode} after the tests passed:\n{proc.stdout[-2000:]}"
