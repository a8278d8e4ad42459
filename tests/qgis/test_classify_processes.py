"""Classify raster's PROCESSES parameter: above 1 the runtime runs under torchrun, as Train BDGF's."""
from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingParameterDefinition

import processing
from bdgf_qgis.provider import ALGORITHMS


@pytest.fixture()
def classify_params(tiny_scene, tmp_path):
    if "classify" not in ALGORITHMS:
        pytest.skip("classify is not in provider.ALGORITHMS")
    model = tmp_path / "m.bdgf"
    model.write_bytes(b"not read by the plugin")
    return {"MODEL": str(model), "SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"],
            "OUTPUT": str(tmp_path / "map.tif"), "DEVICE": 1}


def test_processes_is_an_advanced_parameter(bdgf_provider, classify_params):
    alg = QgsApplication.processingRegistry().algorithmById("bdgf:classify")
    p = alg.parameterDefinition("PROCESSES")
    assert p is not None and p.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert "(PROCESSES)" in alg.shortHelpString()


def test_processes_launch_classify_under_torchrun(bdgf_provider, fake_runtime, classify_params):
    processing.run("bdgf:classify", classify_params)
    assert fake_runtime()[-1]["launcher"] == []  # default: one process, no torchrun
    processing.run("bdgf:classify", {**classify_params, "PROCESSES": 2})
    call = fake_runtime()[-1]
    assert call["command"] == "classify"
    assert call["launcher"] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
