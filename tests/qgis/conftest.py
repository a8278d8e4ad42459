"""Shared helpers of the QGIS-side tests (run with pytest-qgis, no display needed).

    .venv/bin/python -m pytest tests/qgis -q -p pytest_qgis --qgis_disable_gui
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import List

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
FAKE_RUNTIME = TESTS / "fake_runtime.py"
QGIS_PROCESS_SH = REPO / "scripts" / "qgis_process.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `import bdgf_qgis` as a top-level package

from qgis.core import QgsProcessingFeedback  # noqa: E402

# Test modules here import these helpers as `bdgf_qgis_testing`, and `import conftest` keeps
# meaning tests/conftest.py for the modules outside this folder (pytest names every conftest.py
# outside a package `conftest`, so loading this one would otherwise shadow the parent's).
sys.modules["bdgf_qgis_testing"] = sys.modules[__name__]
_PARENT_CONFTEST = REPO / "tests" / "conftest.py"


def pytest_plugin_registered(plugin, manager):
    """Replayed for the plugins registered before this conftest, the parent conftest included."""
    path = getattr(plugin, "__file__", None)
    if path and Path(path).resolve() == _PARENT_CONFTEST:
        sys.modules["conftest"] = plugin


def runtime_python() -> str:
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


@functools.lru_cache(maxsize=None)
def runtime_available() -> bool:
    """True when `python -m bdgf_core --help` succeeds with the runtime's interpreter."""
    try:
        proc = subprocess.run([runtime_python(), "-m", "bdgf_core", "--help"], cwd=str(REPO),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


needs_runtime = pytest.mark.skipif(not runtime_available(),
                                   reason="the BDGF runtime (python -m bdgf_core) is not available yet")


class RecordingFeedback(QgsProcessingFeedback):
    """A feedback that keeps what the bridge reports."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: List[float] = []
        self.infos: List[str] = []
        self.warnings: List[str] = []
        self.errors: List[str] = []
        self.console: List[str] = []
        self.debug: List[str] = []

    def setProgress(self, value):  # noqa: N802
        self.progress.append(float(value))
        super().setProgress(value)

    def pushInfo(self, info):  # noqa: N802
        self.infos.append(info)

    def pushWarning(self, warning):  # noqa: N802
        self.warnings.append(warning)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        self.errors.append(error)

    def pushConsoleInfo(self, info):  # noqa: N802
        self.console.append(info)

    def pushDebugInfo(self, info):  # noqa: N802
        self.debug.append(info)


def qgis_process(*args: str, timeout: float = 600, env_extra=None) -> subprocess.CompletedProcess:
    """Run scripts/qgis_process.sh ARGS with a private profile; return the completed process."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([str(QGIS_PROCESS_SH), *args], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def parse_results(stdout: str) -> dict:
    """The `Results` block of `qgis_process run` (KEY:\\tVALUE lines after 'Results')."""
    out = {}
    seen = False
    for line in stdout.splitlines():
        if line.strip() == "Results":
            seen = True
            continue
        if seen and ":" in line and not line.startswith("-"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="session")
def bdgf_provider(qgis_processing):
    """The BDGF provider, registered once for the session (and kept referenced)."""
    from qgis.core import QgsApplication

    from bdgf_qgis.provider import BdgfProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("bdgf")
    if existing is not None:
        yield existing
        return
    provider = BdgfProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)


@pytest.fixture()
def feedback() -> RecordingFeedback:
    return RecordingFeedback()


def make_fake_python(folder: Path) -> Path:
    """An executable that behaves like `python -m bdgf_core ...` using tests/fake_runtime.py."""
    wrapper = Path(folder) / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_RUNTIME}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture()
def fake_runtime(tmp_path, monkeypatch):
    """BDGF_PYTHON -> the fake runtime; returns a function giving the logged calls."""
    import json

    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("BDGF_PYTHON", str(make_fake_python(tmp_path)))
    monkeypatch.setenv("FAKE_BDGF_LOG", str(log))

    def calls():
        from bdgf_core.cli import build_parser

        if not log.exists():
            return []
        logged = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for call in logged:  # what QGIS passes must be what the real runtime accepts (exits 2 otherwise)
            build_parser().parse_args([call["command"], *map(str, call["args"])])
        return logged

    return calls


def write_small_scene(folder: Path, size: int = 12, bands: int = 4):
    """A tiny spectral/SAR GeoTIFF pair and a ground-truth GeoPackage made with GDAL (no runtime)."""
    import numpy as np
    from osgeo import gdal, ogr, osr

    folder = Path(folder)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    paths = {}
    for name, count in (("spectral", bands), ("sar", 2)):
        path = folder / f"{name}.tif"
        ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, count, gdal.GDT_Float32)
        ds.SetGeoTransform((500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0))
        ds.SetProjection(srs.ExportToWkt())
        for b in range(count):
            ds.GetRasterBand(b + 1).WriteArray(np.random.default_rng(b).random((size, size), dtype=np.float32))
        ds = None
        paths[name] = str(path)
    gpkg = folder / "truth.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    layer = ds.CreateLayer("truth", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for code, (x0, y0) in enumerate([(500010, 4999990), (500060, 4999940)], start=1):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("class", code)
        f.SetField("name", f"class {code}")
        ring = f"POLYGON(({x0} {y0},{x0 + 40} {y0},{x0 + 40} {y0 - 40},{x0} {y0 - 40},{x0} {y0}))"
        f.SetGeometry(ogr.CreateGeometryFromWkt(ring))
        layer.CreateFeature(f)
    ds = None
    paths["groundtruth"] = str(gpkg)
    return paths


@pytest.fixture()
def tiny_scene(tmp_path):
    return write_small_scene(tmp_path)
