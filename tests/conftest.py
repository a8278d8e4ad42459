"""Shared fixtures: a small generated scene, and paths to the real data in ../shared (if present)."""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BDGF_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
sys.path.insert(0, str(ROOT))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session", autouse=True)
def _collect_garbage_before_qgis_exits(request):
    """Free the GDAL datasets that reference cycles still hold before pytest-qgis calls exitQgis().

    exitQgis() tears GDAL down; a dataset closed after it (when the interpreter finally collects a
    cycle holding a RasterSource) crashed the process at exit ("double free or corruption",
    exit 134 or 139) after every test had passed.
    """
    if request.config.pluginmanager.has_plugin("pytest_qgis"):
        request.getfixturevalue("qgis_app")  # so that this fixture's teardown runs before its exitQgis()
    yield
    gc.collect()


def shared_data(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data {p} not present (../shared is only in the project's workspace)")
    return p


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A 48 x 48 scene with 12 spectral bands and 2 SAR bands."""
    from bdgf_core.scene import generate_scene

    return generate_scene(tmp_path_factory.mktemp("scene"), size=48, bands=12, seed=3)
