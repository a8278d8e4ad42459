"""The plugin entry point, metadata and packaging scripts."""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile

from bdgf_qgis_testing import REPO

LOAD_PLUGIN = r"""
import importlib.util, sys
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
spec = importlib.util.spec_from_file_location("bdgf", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
mod = importlib.util.module_from_spec(spec); sys.modules["bdgf"] = mod; spec.loader.exec_module(mod)
assert "torch" not in sys.modules and "bdgf_core" not in sys.modules
plugin = mod.classFactory(None)
plugin.initProcessing()
reg = QgsApplication.processingRegistry()
print("registered", reg.providerById("bdgf") is not None, len(reg.providerById("bdgf").algorithms()))
plugin.initGui()  # iface None: nothing more, no second provider
plugin.unload()
print("after unload", reg.providerById("bdgf") is None)
assert "torch" not in sys.modules and "bdgf_core" not in sys.modules
"""


def test_class_factory_registers_and_unloads(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", LOAD_PLUGIN, str(REPO)], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from bdgf_qgis.provider import ALGORITHMS

    assert f"registered True {len(ALGORITHMS)}" in proc.stdout
    assert "after unload True" in proc.stdout


def test_second_registration_is_logged_not_raised(bdgf_provider):
    from bdgf_qgis.plugin import BdgfPlugin

    plugin = BdgfPlugin(None)
    plugin.initProcessing()  # 'bdgf' is taken by the session's provider: logged, not raised
    assert plugin.provider is None
    plugin.unload()


def test_metadata():
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    g = meta["general"]
    assert g["name"] == "BDGF" and g["hasProcessingProvider"] == "yes"
    assert g["qgisMinimumVersion"] == "3.22" and g["version"] == "0.1.0"
    assert g["author"] == "BDGF for QGIS contributors" and g["experimental"] == "True"
    assert (REPO / g["icon"]).is_file()


def test_package_plugin():
    proc = subprocess.run([str(REPO / "scripts" / "package_plugin.sh")], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(REPO / "dist" / "bdgf.zip") as z:
        names = z.namelist()
    assert all(n.startswith("bdgf/") for n in names)
    for required in ("bdgf/__init__.py", "bdgf/metadata.txt", "bdgf/bdgf_qgis/provider.py",
                     "bdgf/bdgf_core/__init__.py", "bdgf/resources/icon.svg", "bdgf/requirements.txt"):
        assert required in names
    assert not [n for n in names if "__pycache__" in n or ".venv" in n or n.startswith("bdgf/tests")
                or n.endswith(".pyc")]


def test_install_plugin_is_idempotent(tmp_path):
    script = str(REPO / "scripts" / "install_plugin.sh")
    first = subprocess.run([script, str(tmp_path)], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.run([script, str(tmp_path)], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    link = tmp_path / "python" / "plugins" / "bdgf"
    assert link.is_symlink() and os.path.realpath(link) == str(REPO)
    assert "nothing to do" in second.stdout
    assert ".venv" in first.stdout
