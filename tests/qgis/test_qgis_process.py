"""The plugin as qgis_process loads it (scripts/qgis_process.sh), with the fake runtime."""
from __future__ import annotations

import json
import os

import pytest
from bdgf_qgis_testing import REPO, make_fake_python, qgis_process, write_small_scene


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qgis-profile"))


def run_json(profile, *args, env=None):
    proc = qgis_process("--json", "run", *args, env_extra={"BDGF_QGIS_PROFILE": profile, **(env or {})})
    start = proc.stdout.find("{")
    data = json.loads(proc.stdout[start:]) if start >= 0 else None
    return proc, data


def test_list_and_help(profile):
    proc = qgis_process("list", env_extra={"BDGF_QGIS_PROFILE": profile})
    assert proc.returncode == 0, proc.stderr
    from bdgf_qgis.provider import ALGORITHMS

    for name in ALGORITHMS:
        assert f"bdgf:{name}\t" in proc.stdout
    ini = os.path.join(profile, "profiles", "default", "QGIS", "QGIS3.ini")
    assert "bdgf=true" in open(ini).read().split()
    # Idempotent: a second call leaves one entry.
    qgis_process("plugins", env_extra={"BDGF_QGIS_PROFILE": profile})
    assert open(ini).read().count("bdgf=") == 1
    assert os.path.realpath(REPO / "build" / "plugins" / "bdgf") == str(REPO)

    proc = qgis_process("help", "bdgf:classify", env_extra={"BDGF_QGIS_PROFILE": profile})
    assert proc.returncode == 0
    assert "Memory budget (MB) (MEMORY_MB)" in proc.stdout


def test_run_with_relative_paths_and_plain_results(profile, tmp_path):
    scene = write_small_scene(tmp_path)
    (tmp_path / "m.bdgf").write_bytes(b"x")
    env = {"BDGF_PYTHON": str(make_fake_python(tmp_path)), "FAKE_BDGF_LOG": str(tmp_path / "log")}
    proc, data = run_json(profile, "bdgf:classify", "--", f"MODEL={tmp_path / 'm.bdgf'}",
                          f"SPECTRAL={scene['spectral']}", f"SAR={scene['sar']}", "OUTPUT=build/test-map.tif",
                          "DEVICE=1", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = data["results"]
    # qgis_process runs in the repository: the relative output is made absolute for the runtime.
    assert results["OUTPUT"] == str(REPO / "build" / "test-map.tif")
    assert results["STYLE"] == str(REPO / "build" / "test-map.qml")
    call = json.loads((tmp_path / "log").read_text().splitlines()[-1])
    assert call["command"] == "classify" and "cpu" in call["args"]

    proc, data = run_json(profile, "bdgf:assess", "--", f"MAP={scene['spectral']}",
                          f"GROUND_TRUTH={scene['groundtruth']}", f"REPORT={tmp_path / 'r.html'}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["results"]["OA"] == 87.5 and data["results"]["KAPPA"] == 79.0


def test_absurd_value_and_runtime_error_reported(profile, tmp_path):
    scene = write_small_scene(tmp_path)
    env = {"BDGF_PYTHON": str(make_fake_python(tmp_path)), "FAKE_BDGF_LOG": str(tmp_path / "log")}
    common = [f"SPECTRAL={scene['spectral']}", f"SAR={scene['sar']}", f"GROUND_TRUTH={scene['groundtruth']}",
              f"MODEL={tmp_path / 'm.bdgf'}"]
    proc = qgis_process("run", "bdgf:train_baseline", "--", *common, "SAMPLES_PER_CLASS=0",
                        env_extra={"BDGF_QGIS_PROFILE": profile, **env})
    assert proc.returncode != 0
    assert "SAMPLES_PER_CLASS" in proc.stdout + proc.stderr
    assert not (tmp_path / "log").exists()

    env["FAKE_BDGF_FAIL"] = "the ground truth has no polygon inside the rasters"
    proc = qgis_process("run", "bdgf:train_baseline", "--", *common,
                        env_extra={"BDGF_QGIS_PROFILE": profile, **env})
    assert proc.returncode != 0
    assert "the ground truth has no polygon inside the rasters" in proc.stdout + proc.stderr


def test_missing_runtime_is_explained(profile, tmp_path):
    scene = write_small_scene(tmp_path)
    proc = qgis_process("run", "bdgf:train_baseline", "--", f"SPECTRAL={scene['spectral']}", f"SAR={scene['sar']}",
                        f"GROUND_TRUTH={scene['groundtruth']}", f"MODEL={tmp_path / 'm.bdgf'}",
                        env_extra={"BDGF_QGIS_PROFILE": profile, "BDGF_PYTHON": str(tmp_path / "nope")})
    assert proc.returncode != 0
    assert "BDGF_PYTHON" in proc.stdout + proc.stderr
