"""Generate demo scene: a small synthetic hyperspectral + SAR scene with ground-truth polygons."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from .algorithm import BdgfAlgorithm, plain
from .styles import GroundTruthStyle, load_on_completion

VARIANTS = ("standard", "hard")


class GenerateSceneAlgorithm(BdgfAlgorithm):
    NAME = "generate_scene"
    DISPLAY_NAME = "Generate demo scene"
    GROUP = "Data"
    GROUP_ID = "data"
    INTRO = ("Writes a small synthetic scene to try the plugin without downloading data: a "
             "hyperspectral GeoTIFF (spectral.tif), a SAR GeoTIFF on the same grid (sar.tif) and "
             "ground-truth polygons (a GeoPackage with an integer field 'class' and a text field "
             "'name'). The same seed gives the same scene.")
    POSITIVE = ("SIZE", "BANDS")

    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    SIZE = "SIZE"
    BANDS = "BANDS"
    SEED = "SEED"
    VARIANT = "VARIANT"

    def initAlgorithm(self, config=None):
        self.add(QgsProcessingParameterNumber(self.SIZE, "Scene size (pixels per side)",
                                              QgsProcessingParameterNumber.Integer, 200, minValue=16,
                                              maxValue=4096),
                 "Width and height of the square scene in pixels, 16 to 4096; default 200 (a few "
                 "seconds). Use 40 for a quick test.")
        self.add(QgsProcessingParameterNumber(self.BANDS, "Spectral bands", QgsProcessingParameterNumber.Integer,
                                              60, minValue=3, maxValue=512),
                 "Number of hyperspectral bands, 3 to 512; default 60.")
        self.add(QgsProcessingParameterEnum(self.VARIANT, "Difficulty", options=list(VARIANTS), defaultValue=0),
                 "0 = standard (classes separable), 1 = hard (overlapping spectra, where SAR and "
                 "spatial context matter). From qgis_process pass the number.")
        self.add_seed()
        self.add(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"),
                 "Folder that receives spectral.tif, sar.tif and the ground-truth GeoPackage; created "
                 "when missing.")
        self.add_output_help(QgsProcessingOutputRasterLayer("SPECTRAL", "Hyperspectral raster"),
                             "path of the hyperspectral GeoTIFF")
        self.add_output_help(QgsProcessingOutputRasterLayer("SAR", "SAR raster"),
                             "path of the SAR GeoTIFF (same grid)")
        self.add_output_help(QgsProcessingOutputVectorLayer("GROUND_TRUTH", "Ground truth"),
                             "path of the ground-truth GeoPackage")
        self.add_output_help(QgsProcessingOutputRasterLayer("REFERENCE", "Reference map"),
                             "path of reference.tif, every pixel's true class: the ground truth of 'Assess "
                             "accuracy' for whole-map accuracy, class edges included")
        self.add_output_help(QgsProcessingOutputString("CLASS_FIELD", "Class field"),
                             "name of the integer class field of the ground truth")

    def processAlgorithm(self, parameters, context, feedback):
        out_dir = self.output_path(parameters, self.OUTPUT_FOLDER, context)
        os.makedirs(out_dir, exist_ok=True)
        args = ["--out-dir", out_dir,
                "--size", self.parameterAsInt(parameters, self.SIZE, context),
                "--bands", self.parameterAsInt(parameters, self.BANDS, context),
                "--seed", self.parameterAsInt(parameters, self.SEED, context),
                "--variant", VARIANTS[self.parameterAsEnum(parameters, self.VARIANT, context)]]
        res = self.run_runtime("generate-scene", args, feedback)
        field = res.get("class_field", "class")
        load_on_completion(context, res.get("spectral"), "spectral", "SPECTRAL")
        load_on_completion(context, res.get("sar"), "SAR", "SAR")
        load_on_completion(context, res.get("groundtruth"), "ground truth", "GROUND_TRUTH", GroundTruthStyle(field))
        return {
            self.OUTPUT_FOLDER: out_dir,
            "SPECTRAL": plain(res.get("spectral")),
            "SAR": plain(res.get("sar")),
            "GROUND_TRUTH": plain(res.get("groundtruth")),
            "REFERENCE": plain(res.get("reference")),
            "CLASS_FIELD": plain(res.get("class_field", "class")),
        }
