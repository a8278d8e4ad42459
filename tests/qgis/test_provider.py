"""The provider and its algorithms' definitions (no runtime needed)."""
from __future__ import annotations

import re

import pytest
from qgis.core import QgsApplication, QgsProcessingParameterDefinition

from bdgf_qgis import provider as provider_module

NAMES = {
    "generate_scene": ("Generate demo scene", "Data"),
    "import_mat": ("Import paper scene (.mat)", "Data"),
    "train_baseline": ("Train random-forest baseline", "Training"),
    "classify": ("Classify raster", "Classification"),
    "assess": ("Assess accuracy", "Accuracy"),
    "pretrain": ("Pretrain DDPM", "Training"),
    "train": ("Train BDGF", "Training"),
}


def registered(name):
    if name not in provider_module.ALGORITHMS:
        pytest.skip(f"{name} is not in provider.ALGORITHMS")


def algorithms(provider):
    return {a.name(): a for a in provider.algorithms()}


def test_provider_identity_and_algorithms(bdgf_provider):
    assert bdgf_provider.id() == "bdgf"
    assert bdgf_provider.name() == "BDGF"
    assert not bdgf_provider.icon().isNull()
    assert set(algorithms(bdgf_provider)) == set(provider_module.ALGORITHMS)
    assert set(provider_module.ALGORITHMS) <= set(NAMES)
    for name in provider_module.ALGORITHMS:
        display, group = NAMES[name]
        alg = QgsApplication.processingRegistry().algorithmById(f"bdgf:{name}")
        assert alg is not None, name
        assert alg.displayName() == display
        assert alg.group() == group
        assert not alg.icon().isNull()


@pytest.mark.parametrize("name", sorted(NAMES))
def test_parameters_are_documented_and_upper_case(bdgf_provider, name):
    registered(name)
    alg = QgsApplication.processingRegistry().algorithmById(f"bdgf:{name}")
    help_text = alg.shortHelpString()
    assert "<" not in help_text, "keep the help plain text: qgis_process prints it as is"
    for p in alg.parameterDefinitions():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", p.name()), p.name()
        assert p.description() in help_text, f"{name}: {p.name()} not documented"
        assert f"({p.name()})" in help_text, f"{name}: {p.name()} not documented"
        assert p.help(), f"{name}: {p.name()} has no per-parameter help"
    for o in alg.outputDefinitions():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", o.name()), o.name()
        assert o.name() in help_text or alg.parameterDefinition(o.name()) is not None


@pytest.mark.parametrize("name,advanced", [
    ("train", ["SEED", "DEVICE", "CNN", "MUTUAL", "GUIDE_MAMBA"]),
    ("pretrain", ["SEED", "DEVICE", "MASKING", "SPECKLE"]),
    ("classify", ["DEVICE", "MEMORY_MB"]),
    ("train_baseline", ["SEED"]),
])
def test_advanced_flags(bdgf_provider, name, advanced):
    registered(name)
    alg = QgsApplication.processingRegistry().algorithmById(f"bdgf:{name}")
    for pid in advanced:
        assert alg.parameterDefinition(pid).flags() & QgsProcessingParameterDefinition.FlagAdvanced, pid
    for pid in ("SPECTRAL", "MODEL"):
        d = alg.parameterDefinition(pid)
        if d is not None:
            assert not d.flags() & QgsProcessingParameterDefinition.FlagAdvanced


def test_chaining_types(bdgf_provider):
    """One algorithm's outputs are of the kind the next one takes, so graphical models chain them."""
    for name in ("train_baseline", "classify", "assess", "pretrain", "train"):
        registered(name)
    reg = QgsApplication.processingRegistry()
    baseline = reg.algorithmById("bdgf:train_baseline")
    classify = reg.algorithmById("bdgf:classify")
    assess = reg.algorithmById("bdgf:assess")
    pretrain = reg.algorithmById("bdgf:pretrain")
    train = reg.algorithmById("bdgf:train")
    assert baseline.parameterDefinition("MODEL").type() == "fileDestination"
    assert train.parameterDefinition("MODEL").type() == "fileDestination"
    assert classify.parameterDefinition("MODEL").type() == "file"
    assert assess.parameterDefinition("MODEL").type() == "file"
    assert classify.parameterDefinition("OUTPUT").type() == "rasterDestination"
    assert assess.parameterDefinition("MAP").type() == "raster"
    assert pretrain.parameterDefinition("FEATURES").type() == "rasterDestination"
    assert train.parameterDefinition("FEATURES").type() == "raster"
    assert classify.parameterDefinition("FEATURES").type() == "raster"
    assert baseline.parameterDefinition("MODEL").fileFilter() == "BDGF model (*.bdgf)"
    assert classify.parameterDefinition("CLASS_FIELD") is None
    assert assess.parameterDefinition("CLASS_FIELD").parentLayerParameterName() == "GROUND_TRUTH"
    # The modeler offers an output as input only when the types are compatible.
    assert "outputFile" in [o.type() for o in baseline.outputDefinitions() if o.name() == "MODEL"]
    assert "outputRaster" in [o.type() for o in classify.outputDefinitions() if o.name() == "OUTPUT"]


def test_provider_settings_registered(bdgf_provider):
    from processing.core.ProcessingConfig import ProcessingConfig

    assert "BDGF_PYTHON" in ProcessingConfig.settings
    assert ProcessingConfig.settings["BDGF_PYTHON"].group == "BDGF"


def test_algorithms_tuple_limits_registration(qgis_processing, monkeypatch):
    monkeypatch.setattr(provider_module, "ALGORITHMS", ("classify", "assess", "no_such_alg"))
    p = provider_module.BdgfProvider()
    p.loadAlgorithms()  # an unknown name is logged, not raised
    assert sorted(a.name() for a in p.algorithms()) == ["assess", "classify"]
