"""Classify raster: apply a trained model (BDGF or random-forest baseline) to a whole scene."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from .algorithm import RASTER_EXTENSIONS, BdgfAlgorithm, add_inputs, input_args, plain
from .styles import ClassMapStyle, RampStyle, style_on_load


class ClassifyAlgorithm(BdgfAlgorithm):
    NAME = "classify"
    DISPLAY_NAME = "Classify raster"
    GROUP = "Classification"
    GROUP_ID = "classification"
    INTRO = ("Applies a model written by 'Train BDGF' or 'Train random-forest baseline' to the whole "
             "scene, block by block within a memory budget, and writes a class map (GeoTIFF, one "
             "byte per pixel, on the grid of the hyperspectral raster) with a style file beside it "
             "so that QGIS shows class names and colours. Optionally writes the confidence (highest "
             "class probability) and the entropy of the class probabilities.")
    POSITIVE = ("MEMORY_MB",)

    MODEL = "MODEL"
    SPECTRAL = "SPECTRAL"
    SAR = "SAR"
    FEATURES = "FEATURES"
    DIFFUSION_MODEL = "DIFFUSION_MODEL"
    OUTPUT = "OUTPUT"
    CONFIDENCE = "CONFIDENCE"
    ENTROPY = "ENTROPY"
    MEMORY_MB = "MEMORY_MB"
    DEVICE = "DEVICE"

    def initAlgorithm(self, config=None):
        self.add(QgsProcessingParameterFile(self.MODEL, "Model file", extension="bdgf"),
                 "A .bdgf model file written by 'Train BDGF' or 'Train random-forest baseline'. It "
                 "carries its classes, band count and scaling; the rasters are checked against it.")
        add_inputs(self, spectral=True, sar=True, features=True, features_optional=True, resampling=False)
        self.add(QgsProcessingParameterFile(self.DIFFUSION_MODEL, "Diffusion model file", extension="bdgf",
                                            optional=True),
                 "The diffusion model of 'Pretrain DDPM' (its MODEL output), used to compute the "
                 "diffusion features on the fly when a BDGF model is given without a features "
                 "raster. Optional; not needed by the random-forest baseline.")
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class map"),
                 "The class map to write (GeoTIFF, .tif). A .qml style is written beside it.")
        self.add(QgsProcessingParameterRasterDestination(self.CONFIDENCE, "Confidence", optional=True,
                                                         createByDefault=False),
                 "Optional GeoTIFF of the highest class probability per pixel, 0..1.")
        self.add(QgsProcessingParameterRasterDestination(self.ENTROPY, "Entropy", optional=True,
                                                         createByDefault=False),
                 "Optional GeoTIFF of the entropy of the class probabilities per pixel (0 = certain).")
        self.add(QgsProcessingParameterNumber(self.MEMORY_MB, "Memory budget (MB)",
                                              QgsProcessingParameterNumber.Integer, 1024, minValue=64,
                                              maxValue=1048576),
                 "Memory the prediction may use, 64 to 1048576 MB; default 1024. The scene is read "
                 "and written in blocks sized from it; lower it if the system runs out of memory.",
                 advanced=True)
        self.add(QgsProcessingParameterEnum("FAST", "Speed (BDGF models)", options=[
                     "exact (the model's map)", "bf16 arithmetic (about 1.7x; probabilities within ~1e-3)",
                     "student (a compact network distilled on this scene: hundreds of times faster, not the "
                     "model's map)"], defaultValue=0, optional=True),
                 "0 = exact (default): every pixel through the trained network. 1 = bfloat16 arithmetic on the CPU "
                 "too. 2 = a small convolutional student distilled from the model on this scene's pixels, saved "
                 "beside the model (MODEL.student.bdgf for a model MODEL.bdgf) and reused; the log gives its agreement with the model "
                 "on held-out pixels: check it before relying on the map. The student needs FEATURES as a raster. "
                 "From qgis_process pass the number.", advanced=True)
        self.add_device()
        self.add_processes()  # the blocks of rows are shared by the processes; the map is the one of one process
        self.add_output_help(QgsProcessingOutputFile("STYLE", "Style file"),
                             "the .qml style written beside the class map")

    def processAlgorithm(self, parameters, context, feedback):
        out = self.output_path(parameters, self.OUTPUT, context, RASTER_EXTENSIONS)
        confidence = self.output_path(parameters, self.CONFIDENCE, context, RASTER_EXTENSIONS)
        entropy = self.output_path(parameters, self.ENTROPY, context, RASTER_EXTENSIONS)
        args = ["--model", self.file_path(parameters, self.MODEL, context)] + input_args(self, parameters, context)
        features = self.raster_path(parameters, self.FEATURES, context, optional=True)
        if features:
            args += ["--features", features]
        diffusion = self.file_path(parameters, self.DIFFUSION_MODEL, context)
        if diffusion:
            args += ["--diffusion-model", diffusion]
        args += ["--out", out]
        if confidence:
            args += ["--confidence", confidence]
        if entropy:
            args += ["--entropy", entropy]
        if parameters.get("FAST") not in (None, "") and self.parameterAsEnum(parameters, "FAST", context) > 0:
            args += ["--fast", ("bf16", "student")[self.parameterAsEnum(parameters, "FAST", context) - 1]]
        args += ["--memory-mb", self.parameterAsInt(parameters, self.MEMORY_MB, context),
                 "--device", self.device(parameters, context)]
        res = self.run_runtime("classify", args, feedback, outputs=[out, confidence, entropy],
                               processes=self.processes(parameters, context))
        style_on_load(context, out, ClassMapStyle(res.get("style") or os.path.splitext(out)[0] + ".qml"))
        style_on_load(context, confidence, RampStyle("Viridis", 0.0, 1.0))
        style_on_load(context, entropy, RampStyle("Magma", 0.0))
        return {
            self.OUTPUT: plain(res.get("map", out)),
            self.CONFIDENCE: plain(res.get("confidence", confidence)),
            self.ENTROPY: plain(res.get("entropy", entropy)),
            "STYLE": plain(res.get("style")),
        }
