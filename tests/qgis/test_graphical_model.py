"""The graphical model resources/models/bdgf_chain.model3 ("BDGF: pretrain, train, classify,
assess"): it loads, its steps resolve to bdgf:* and chain into each other, the plugin lists it
under the Toolbox's Models, and it runs through processing.run() and qgis_process on a tiny
generated scene with tiny settings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bdgf_qgis_testing import REPO, needs_runtime, qgis_process, runtime_python

MODEL_FILE = REPO / "resources" / "models" / "bdgf_chain.model3"
MODEL_NAME = "BDGF: pretrain, train, classify, assess"
INPUTS = ["SPECTRAL", "SAR", "GROUND_TRUTH", "CLASS_FIELD"]
OUTPUTS = ["pretrain:Diffusion model", "pretrain:Diffusion features", "train:BDGF model", "train:Training report",
           "classify:Class map", "assess:Accuracy report"]
#: the quickest settings that exercise every step
TINY = {"STEPS": 2, "PROFILE": 1, "TIMESTEPS": "5", "EPOCHS": 1, "SAMPLES_PER_CLASS": 10, "DEVICE": 1}


def load_model():
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL_FILE)), f"{MODEL_FILE} does not load"
    return model


def test_model_loads_and_its_steps_resolve(bdgf_provider):
    model = load_model()
    assert model.name() == MODEL_NAME and model.group() == "BDGF"
    ok, errors = model.validate()
    assert ok, errors
    children = model.childAlgorithms()
    assert {k: c.algorithmId() for k, c in children.items()} == {
        "pretrain": "bdgf:pretrain", "train": "bdgf:train", "classify": "bdgf:classify", "assess": "bdgf:assess"}
    for child in children.values():
        assert child.algorithm() is not None and child.algorithm().provider().id() == "bdgf"
    names = [p.name() for p in model.parameterDefinitions()]
    assert names[:4] == INPUTS
    assert set(OUTPUTS) <= {p.name() for p in model.destinationParameterDefinitions()}
    assert "pretrain" in model.shortHelpString() and "Assess accuracy" in model.shortHelpString()


def test_steps_feed_each_other(bdgf_provider):
    from qgis.core import QgsProcessingModelChildParameterSource as Src

    children = load_model().childAlgorithms()

    def source(child, param):
        [src] = children[child].parameterSources()[param]
        if src.source() == Src.ChildOutput:
            return f"{src.outputChildId()}.{src.outputName()}"
        if src.source() == Src.ModelParameter:
            return src.parameterName()
        return src.staticValue()

    assert source("train", "FEATURES") == "pretrain.FEATURES"
    assert source("classify", "FEATURES") == "pretrain.FEATURES"
    assert source("classify", "MODEL") == "train.MODEL"
    assert source("assess", "MAP") == "classify.OUTPUT"
    assert source("assess", "MODEL") == "train.MODEL"  # held-out pixels of the model
    for child in ("pretrain", "train", "classify"):
        assert source(child, "SPECTRAL") == "SPECTRAL" and source(child, "SAR") == "SAR"
    for child in ("train", "assess"):
        assert source(child, "GROUND_TRUTH") == "GROUND_TRUTH" and source(child, "CLASS_FIELD") == "CLASS_FIELD"
        assert source(child, "LABEL_RASTER") == "LABEL_RASTER"  # label rasters work in the chain too
    # batch and tile are the profile's (0), not the paper's 20 / 64 forced on the fast profile
    assert source("pretrain", "BATCH_SIZE") == 0 and source("pretrain", "TILE_SIZE") == 0


def test_defaults_finish_on_a_laptop(bdgf_provider):
    """The chain's profile defaults to auto (fast on a CPU), as Pretrain DDPM's does."""
    from bdgf_qgis.alg_pretrain import PROFILES

    model = load_model()
    profile = model.parameterDefinition("PROFILE")
    assert PROFILES[profile.defaultValue()] == "auto"
    assert PROFILES[registered("bdgf:pretrain").parameterDefinition("PROFILE").defaultValue()] == "auto"
    assert "3000;" not in model.shortHelpString() and "default 3000" not in model.shortHelpString()


def registered(alg_id):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(alg_id)


def test_shipped_file_is_what_the_generator_writes(bdgf_provider, tmp_path):
    """resources/models/make_bdgf_chain.py rebuilds the file: they must not drift apart. Both are
    compared as loaded, so the copies of the steps' output definitions (rebuilt on load from the
    algorithms as they are now) do not count, only what the model itself says."""
    import importlib.util

    from qgis.core import QgsProcessingModelAlgorithm

    spec = importlib.util.spec_from_file_location("make_bdgf_chain", MODEL_FILE.with_name("make_bdgf_chain.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.build().toFile(str(tmp_path / "rebuilt.model3"))
    rebuilt = QgsProcessingModelAlgorithm()
    assert rebuilt.fromFile(str(tmp_path / "rebuilt.model3"))
    assert rebuilt.toVariant() == load_model().toVariant(), \
        "run resources/models/make_bdgf_chain.py to update bdgf_chain.model3"


LIST_MODELS = r"""
import importlib.util, json, sys
from qgis.core import QgsApplication, QgsSettings
app = QgsApplication([], False); app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
from processing.modeler.ModelerUtils import ModelerUtils
Processing.initialize()
QgsSettings().setValue("Processing/Configuration/MODELS_FOLDER", sys.argv[2])
from processing.core.ProcessingConfig import ProcessingConfig
ProcessingConfig.readSettings()
spec = importlib.util.spec_from_file_location("bdgf", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
mod = importlib.util.module_from_spec(spec); sys.modules["bdgf"] = mod; spec.loader.exec_module(mod)
reg = QgsApplication.processingRegistry()
def models():
    return sorted(a.id() for a in reg.providerById("model").algorithms())
out = {}
plugin = mod.classFactory(None)
plugin.initProcessing()
plugin.initGui()  # a second call (the GUI's) must not add the folder twice
out["loaded"] = models()
out["folders"] = ModelerUtils.modelsFolders()
out["stored"] = QgsSettings().value("Processing/Configuration/MODELS_FOLDER")
alg = reg.algorithmById("model:" + sys.argv[3])
out["children"] = sorted(c.algorithmId() for c in alg.childAlgorithms().values()) if alg else None
plugin.unload()
out["unloaded"] = models()
out["folders_after"] = ModelerUtils.modelsFolders()
print("RESULT" + json.dumps(out))
"""


def test_plugin_lists_the_model_under_models_and_unload_removes_it(tmp_path):
    own = tmp_path / "my models"
    own.mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    proc = subprocess.run([sys.executable, "-c", LIST_MODELS, str(REPO), str(own), MODEL_NAME], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    ours = str(MODEL_FILE.parent)
    assert f"model:{MODEL_NAME}" in out["loaded"]
    assert out["children"] == ["bdgf:assess", "bdgf:classify", "bdgf:pretrain", "bdgf:train"]
    # the user's folder stays first (the Model Designer saves there); ours is appended once
    assert out["folders"] == [str(own), ours] and out["stored"] == f"{own};{ours}"
    assert f"model:{MODEL_NAME}" not in out["unloaded"] and out["folders_after"] == [str(own)]


def test_qgis_process_lists_the_model(tmp_path):
    proc = qgis_process("list", env_extra={"BDGF_QGIS_PROFILE": str(tmp_path / "profile")})
    assert proc.returncode == 0, proc.stderr
    assert f"model:{MODEL_NAME}" in proc.stdout


# --- running it ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model scene é")  # spaces and non-ASCII on the way
    proc = subprocess.run([runtime_python(), "-m", "bdgf_core", "generate-scene", "--out-dir", str(folder),
                           "--size", "32", "--bands", "6", "--seed", "0", "--progress", "none"],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"SPECTRAL": str(folder / "spectral.tif"), "SAR": str(folder / "sar.tif"),
            "GROUND_TRUTH": str(folder / "groundtruth.gpkg"), "CLASS_FIELD": "class"}


def check_outputs(results, scene, folder):
    from osgeo import gdal, ogr

    for name in OUTPUTS:
        assert Path(results[name]).is_file(), (name, results[name])
        assert Path(results[name]).parent == folder, name
    ref, classmap = gdal.Open(scene["SPECTRAL"]), gdal.Open(results["classify:Class map"])
    assert (classmap.RasterXSize, classmap.RasterYSize) == (ref.RasterXSize, ref.RasterYSize)
    assert np.allclose(classmap.GetGeoTransform(), ref.GetGeoTransform())
    truth = ogr.Open(scene["GROUND_TRUTH"])  # keep the dataset referenced while its layer is read
    codes = {f.GetField("class") for f in truth.GetLayer(0)}
    values = set(np.unique(classmap.ReadAsArray()).tolist()) - {0}
    assert values and values <= codes
    feats = gdal.Open(results["pretrain:Diffusion features"])
    assert (feats.RasterXSize, feats.RasterYSize) == (ref.RasterXSize, ref.RasterYSize)
    html = Path(results["assess:Accuracy report"]).read_text(encoding="utf-8")
    assert "Confusion matrix" in html and "held-out" in html
    meta = json.loads(Path(results["train:Training report"]).with_suffix(".json").read_text(encoding="utf-8"))
    assert len(meta["history"]["loss"]) == 1  # EPOCHS=1 reached the training step


@pytest.mark.slow
@needs_runtime
def test_model_runs_with_processing_run(bdgf_provider, scene, tmp_path, feedback):
    import processing

    out = tmp_path / "out"
    out.mkdir()
    params = dict(scene, **TINY)
    params.update({name: str(out / name.split(":")[1].replace(" ", "_").lower()) for name in OUTPUTS})
    params["pretrain:Diffusion features"] += ".tif"
    params["classify:Class map"] += ".tif"
    params["pretrain:Diffusion model"] += ".bdgf"
    params["train:BDGF model"] += ".bdgf"
    params["train:Training report"] += ".html"
    params["assess:Accuracy report"] += ".html"
    results = processing.run(load_model(), params, feedback=feedback)
    check_outputs(results, scene, out)
    assert any("Assess accuracy" in m or "OA" in m for m in feedback.infos)


@pytest.mark.slow
@needs_runtime
def test_model_runs_with_qgis_process_and_the_model_file(scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    files = {"pretrain:Diffusion model": "ddpm.bdgf", "pretrain:Diffusion features": "features.tif",
             "train:BDGF model": "bdgf.bdgf", "train:Training report": "training.html",
             "classify:Class map": "map.tif", "assess:Accuracy report": "accuracy.html"}
    args = [f"{k}={v}" for k, v in dict(scene, **TINY).items()] + [f"{k}={out / v}" for k, v in files.items()]
    proc = qgis_process("--json", "run", str(MODEL_FILE), "--", *args, timeout=600,
                        env_extra={"BDGF_QGIS_PROFILE": str(tmp_path / "profile")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout[proc.stdout.find("{"):])["results"]
    check_outputs(results, scene, out)
    assert results["classify:Class map"] == str(out / "map.tif")
