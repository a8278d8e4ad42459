"""Pretrain DDPM's PROCESSES parameter: above 1 the runtime runs under torchrun (data parallel)."""
from __future__ import annotations

import pytest

import processing
from bdgf_qgis.provider import ALGORITHMS


def test_pretrain_processes_launch_the_runtime_under_torchrun(bdgf_provider, fake_runtime, tiny_scene, tmp_path):
    if "pretrain" not in ALGORITHMS:
        pytest.skip("pretrain is not in provider.ALGORITHMS")
    base = {"SPECTRAL": tiny_scene["spectral"], "SAR": tiny_scene["sar"], "PROFILE": 1,
            "MODEL": str(tmp_path / "ddpm.bdgf"), "FEATURES": str(tmp_path / "feat.tif")}
    processing.run("bdgf:pretrain", base)
    assert fake_runtime()[-1]["launcher"] == []  # default 1: no torchrun
    processing.run("bdgf:pretrain", {**base, "PROCESSES": 2})
    call = fake_runtime()[-1]
    assert call["command"] == "pretrain"
    assert call["launcher"] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    from qgis.core import QgsApplication

    param = QgsApplication.processingRegistry().algorithmById("bdgf:pretrain").parameterDefinition("PROCESSES")
    assert param.defaultValue() == 1 and param.flags() & param.FlagAdvanced
