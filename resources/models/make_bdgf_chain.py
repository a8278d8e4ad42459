"""Writes bdgf_chain.model3, the graphical model "BDGF: pretrain, train, classify, assess".

The .model3 file is what ships (QGIS reads it; the plugin adds this folder to Processing's
models folders so that the Toolbox lists it under Models > BDGF). This script is how it was
made and how to remake it after a parameter of the chained algorithms changes:

    QT_QPA_PLATFORM=offscreen .venv/bin/python resources/models/make_bdgf_chain.py

It needs QGIS (its Python bindings) and registers the BDGF provider itself, since a model can
only be built from algorithms that resolve.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL_FILE = HERE / "bdgf_chain.model3"
MODEL_NAME = "BDGF: pretrain, train, classify, assess"
MODEL_GROUP = "BDGF"

DESCRIPTION = (
    "The whole BDGF method in one run: 'Pretrain DDPM' trains the diffusion model on the "
    "hyperspectral and SAR rasters and writes their diffusion features; 'Train BDGF' trains the "
    "multi-branch classifier on the ground truth with those features; 'Classify raster' maps the "
    "whole scene; 'Assess accuracy' compares the map with the ground truth on the pixels the "
    "training held out. Long on a CPU with the defaults: the 'fast' profile, fewer pretraining "
    "steps and fewer epochs give a quick first run. Open the model in the Model Designer to change "
    "the settings of each step.")

#: model parameter -> help (shown in the algorithm dialog)
PARAMETER_HELP = {
    "SPECTRAL": "The hyperspectral (or multispectral) raster, one band per wavelength (GeoTIFF).",
    "SAR": "The SAR raster of the same area (resampled onto the hyperspectral grid when needed).",
    "GROUND_TRUTH": "Labelled polygons (or points) with a class code or class name per feature; leave empty "
                    "when the labels come from a label raster.",
    "CLASS_FIELD": "Field of the ground truth holding the classes (integer codes or text names); default 'class'.",
    "LABEL_RASTER": "Instead of polygons: a raster of class codes on the image's grid (its nodata value, "
                    "or 0 when it has none, means unlabelled).",
    "SAMPLES_PER_CLASS": "Training pixels drawn per class; the rest are held out for the accuracy.",
    "STEPS": "Optimisation steps of the diffusion pretraining; 0 (default) = the profile's: 300 for fast, "
             "30000 for paper. Batch and tile size are the profile's too.",
    "PROFILE": "Diffusion profile: 0 = paper (the paper's denoiser: hours on a GPU, weeks on a CPU), 1 = fast "
               "(minutes on a CPU), 2 = auto (default: fast on a CPU, paper on a GPU). The run prints its "
               "estimated time before it goes on.",
    "TIMESTEPS": "Comma-separated diffusion timesteps at which features are extracted.",
    "EPOCHS": "Passes of the BDGF training over the training pixels; default 100.",
    "DEVICE": "0 = auto (the GPU when PyTorch sees one), 1 = cpu, 2 = cuda.",
    "SEED": "Seed of every random choice; the same seed and data give the same result.",
}

#: (child id, child output) -> model output description (its parameter name is derived from it)
OUTPUTS = {
    ("pretrain", "MODEL"): "Diffusion model",
    ("pretrain", "FEATURES"): "Diffusion features",
    ("train", "MODEL"): "BDGF model",
    ("train", "REPORT"): "Training report",
    ("classify", "OUTPUT"): "Class map",
    ("assess", "REPORT"): "Accuracy report",
}


def build():
    from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Src, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessingParameterDefinition,
                           QgsProcessingParameterEnum, QgsProcessingParameterField, QgsProcessingParameterNumber,
                           QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                           QgsProcessingParameterVectorLayer)
    from qgis.PyQt.QtCore import QPointF, QSizeF

    model = QgsProcessingModelAlgorithm(MODEL_NAME, MODEL_GROUP)
    advanced = QgsProcessingParameterDefinition.FlagAdvanced
    params = [
        QgsProcessingParameterRasterLayer("SPECTRAL", "Hyperspectral (or multispectral) raster"),
        QgsProcessingParameterRasterLayer("SAR", "SAR raster"),
        QgsProcessingParameterVectorLayer("GROUND_TRUTH", "Ground truth polygons",
                                          [QgsProcessing.TypeVectorAnyGeometry], optional=True),
        QgsProcessingParameterField("CLASS_FIELD", "Class field", defaultValue="class",
                                    parentLayerParameterName="GROUND_TRUTH",
                                    type=QgsProcessingParameterField.Any, optional=True),
        QgsProcessingParameterRasterLayer("LABEL_RASTER", "... or a label raster", optional=True),
        QgsProcessingParameterNumber("SAMPLES_PER_CLASS", "Training samples per class",
                                     QgsProcessingParameterNumber.Integer, 50, minValue=1, maxValue=1000000),
        QgsProcessingParameterNumber("STEPS", "Pretraining steps (0 = the profile's)",
                                     QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=10000000),
        QgsProcessingParameterEnum("PROFILE", "Diffusion profile",
                                   options=["paper", "fast", "auto (fast on a CPU, paper on a GPU)"], defaultValue=2),
        QgsProcessingParameterString("TIMESTEPS", "Feature timesteps (empty = the profile's)", "", optional=True),
        QgsProcessingParameterNumber("EPOCHS", "Training epochs", QgsProcessingParameterNumber.Integer, 100,
                                     minValue=1, maxValue=100000),
        QgsProcessingParameterEnum("DEVICE", "Device", options=["auto", "cpu", "cuda"], defaultValue=0),
        QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer, 0, minValue=0),
    ]
    for i, p in enumerate(params):
        if p.name() in ("TIMESTEPS", "SEED", "DEVICE"):
            p.setFlags(p.flags() | advanced)
        if hasattr(p, "setHelp"):
            p.setHelp(PARAMETER_HELP[p.name()])
        component = QgsProcessingModelParameter(p.name())
        component.setDescription(p.description())
        component.setPosition(QPointF(120 + 200 * (i % 4), 60 + 70 * (i // 4)))
        model.addModelParameter(p, component)

    def param(name):
        return Src.fromModelParameter(name)

    def output(child, name):
        return Src.fromChildOutput(child, name)

    def static(value):
        return Src.fromStaticValue(value)

    children = [
        ("pretrain", "bdgf:pretrain", "Pretrain DDPM", {
            "SPECTRAL": param("SPECTRAL"), "SAR": param("SAR"), "STEPS": param("STEPS"),
            "BATCH_SIZE": static(0), "TILE_SIZE": static(0), "TIMESTEPS": param("TIMESTEPS"),
            "MASKING": static(True), "SPECKLE": static(True), "PROFILE": param("PROFILE"),
            "DEVICE": param("DEVICE"), "SEED": param("SEED")}),
        ("train", "bdgf:train", "Train BDGF", {
            "SPECTRAL": param("SPECTRAL"), "SAR": param("SAR"), "FEATURES": output("pretrain", "FEATURES"),
            "GROUND_TRUTH": param("GROUND_TRUTH"), "CLASS_FIELD": param("CLASS_FIELD"),
            "LABEL_RASTER": param("LABEL_RASTER"), "SAMPLES_PER_CLASS": param("SAMPLES_PER_CLASS"), "SPLIT": static(0), "VALIDATION_SHARE": static(0.1),
            "EPOCHS": param("EPOCHS"), "BATCH_SIZE": static(64), "PATCH_SIZE": static(9),
            "DEVICE": param("DEVICE"), "SEED": param("SEED"),
            **{b: static(True) for b in ("CNN", "TRANSFORMER", "MAMBA", "GUIDE_CNN", "GUIDE_TRANSFORMER",
                                         "GUIDE_MAMBA", "MUTUAL")}}),
        ("classify", "bdgf:classify", "Classify raster", {
            "MODEL": output("train", "MODEL"), "SPECTRAL": param("SPECTRAL"), "SAR": param("SAR"),
            "FEATURES": output("pretrain", "FEATURES"), "MEMORY_MB": static(1024), "DEVICE": param("DEVICE")}),
        ("assess", "bdgf:assess", "Assess accuracy", {
            "MAP": output("classify", "OUTPUT"), "GROUND_TRUTH": param("GROUND_TRUTH"),
            "CLASS_FIELD": param("CLASS_FIELD"), "LABEL_RASTER": param("LABEL_RASTER"),
            "MODEL": output("train", "MODEL")}),
    ]
    for k, (child_id, alg_id, description, sources) in enumerate(children):
        child = QgsProcessingModelChildAlgorithm(alg_id)
        child.setChildId(child_id)
        child.setDescription(description)
        child.setPosition(QPointF(220 + 260 * k, 330 + 60 * (k % 2)))
        child.setSize(QSizeF(200, 50))
        if not child.algorithm():
            raise RuntimeError(f"{alg_id} does not resolve: is the BDGF provider registered?")
        for name, src in sources.items():  # (setParameterSources crashes QGIS 3.22's bindings)
            child.addParameterSources(name, [src])
        outputs = {}
        for (cid, out_name), out_desc in OUTPUTS.items():
            if cid != child_id:
                continue
            o = QgsProcessingModelOutput(out_desc)
            o.setChildId(child_id)
            o.setChildOutputName(out_name)
            o.setDescription(out_desc)
            o.setMandatory(True)
            o.setPosition(QPointF(child.position().x() + 40, child.position().y() + 120))
            outputs[out_desc] = o
        child.setModelOutputs(outputs)
        model.addChildAlgorithm(child)
    model.setParameterOrder([p.name() for p in params])
    model.updateDestinationParameters()
    model.setHelpContent({"ALG_DESC": DESCRIPTION, "ALG_CREATOR": "BDGF for QGIS contributors",
                          "ALG_HELP_CREATOR": "BDGF for QGIS contributors", **PARAMETER_HELP})
    return model


def main() -> int:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path[:0] = [str(REPO), "/usr/share/qgis/python/plugins"]
    from processing.core.Processing import Processing

    from bdgf_qgis.provider import BdgfProvider

    Processing.initialize()
    provider = BdgfProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    model = build()
    ok, errors = model.validate()
    if not ok:
        print("the model does not validate:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    if not model.toFile(str(MODEL_FILE)):
        print(f"could not write {MODEL_FILE}", file=sys.stderr)
        return 1
    print(f"wrote {MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
