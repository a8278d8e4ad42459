"""scripts/gpu_check.sh in its CPU mode: the GDAL-free test selection collects with GDAL and QGIS blocked,
a few of its tests run, and the training / throughput steps write their report."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"),
           "GPU_CHECK_REPORT": str(tmp_path / "gpu.md"), "OUT": str(tmp_path / "out"),
           # every selected file is collected (so imports without GDAL); only these tests run here
           "GPU_CHECK_K": "student_dense_equals or bf16_is_close or dispatch_on_cpu", "GPU_CHECK_BUDGET": "1500"}
    (tmp_path / "out").mkdir()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (tmp_path / "work" / "results" / "tests.log").read_text()
    assert " passed" in log and "error" not in log.lower(), log[-2000:]
    bench = json.loads((tmp_path / "work" / "results" / "bench.json").read_text())
    assert bench["flop_per_pixel"] > 1e6 and bench["classify_px_per_s"] > 0 and bench["student_px_per_s"] > 0
    assert bench["student_dense_vs_patch"] < 1e-5
    report = (tmp_path / "gpu.md").read_text()
    assert "GDAL-free tests" in report and "kernel: skipped (CPU mode)" in report
    assert (tmp_path / "out" / "gpu.md").read_text() == report


def test_gpu_check_blocks_gdal(tmp_path):
    """A test file that needs GDAL fails the check instead of being skipped (the lent machines have none)."""
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"),
           "GPU_CHECK_REPORT": str(tmp_path / "gpu.md"), "GPU_CHECK_TESTS": "tests/test_raster.py",
           "GPU_CHECK_PYTEST_ARGS": "--collect-only", "GPU_CHECK_STEPS": "tests"}
    env.pop("OUT", None)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode != 0
    assert "blocked by scripts/gpu_check.sh" in (tmp_path / "work" / "results" / "tests.log").read_text()
