"""Import paper scene (.mat): the paper's Augsburg or Berlin scene as GeoTIFFs and label rasters."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from .algorithm import BdgfAlgorithm, plain
from .styles import load_on_completion

SCENES = ("auto", "augsburg", "berlin", "none")
#: output id -> (runtime result key, file the runtime writes into the folder)
FILES = {
    "SPECTRAL": ("spectral", "spectral.tif"),
    "SAR": ("sar", "sar.tif"),
    "TRAIN_LABELS": ("train", "train_labels.tif"),
    "TEST_LABELS": ("test", "test_labels.tif"),
}


class ImportMatAlgorithm(BdgfAlgorithm):
    NAME = "import_mat"
    DISPLAY_NAME = "Import paper scene (.mat)"
    GROUP = "Data"
    GROUP_ID = "data"
    INTRO = ("Converts a scene of the paper distributed as MATLAB files (Augsburg: data_HS_LR.mat, "
             "data_SAR_HR.mat, TrainImage.mat, TestImage.mat; Berlin the same) into GeoTIFFs: "
             "spectral.tif, sar.tif, and the official training and test labels as label rasters "
             "(train_labels.tif, test_labels.tif; 0 = unlabelled). The files carry no "
             "georeferencing, so the GeoTIFFs have no CRS and one map unit per pixel (x = column, "
             "y = height - row). Train on them with TRAIN_LABELS as the ground truth and TEST_LABELS "
             "as the test ground truth to reproduce the paper's fixed split. MATLAB v7.3 files need "
             "the h5py package in the runtime's environment.")

    HS_FILE = "HS_FILE"
    SAR_FILE = "SAR_FILE"
    TRAIN_FILE = "TRAIN_FILE"
    TEST_FILE = "TEST_FILE"
    SCENE = "SCENE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    def initAlgorithm(self, config=None):
        self.add(QgsProcessingParameterFile(self.HS_FILE, "Hyperspectral image (.mat)", extension="mat"),
                 "The hyperspectral cube, height x width x bands, e.g. data_HS_LR.mat.")
        self.add(QgsProcessingParameterFile(self.SAR_FILE, "SAR image (.mat)", extension="mat"),
                 "The SAR image of the same scene, height x width x bands, e.g. data_SAR_HR.mat.")
        self.add(QgsProcessingParameterFile(self.TRAIN_FILE, "Training labels (.mat)", extension="mat"),
                 "The training label image, height x width class codes (0 = unlabelled), e.g. "
                 "TrainImage.mat.")
        self.add(QgsProcessingParameterFile(self.TEST_FILE, "Test labels (.mat)", extension="mat"),
                 "The test label image, height x width class codes (0 = unlabelled), e.g. TestImage.mat.")
        self.add(QgsProcessingParameterEnum(self.SCENE, "Class names", options=list(SCENES), defaultValue=0),
                 "Class names written into the label rasters: 0 = auto (recognised from the image size), "
                 "1 = augsburg, 2 = berlin (the paper's Table I), 3 = none (class 1, class 2...). From "
                 "qgis_process pass the number.", advanced=True)
        self.add(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"),
                 "Folder that receives spectral.tif, sar.tif, train_labels.tif and test_labels.tif; "
                 "created when missing.")
        self.add_output_help(QgsProcessingOutputRasterLayer("SPECTRAL", "Hyperspectral raster"),
                             "path of the hyperspectral GeoTIFF")
        self.add_output_help(QgsProcessingOutputRasterLayer("SAR", "SAR raster"),
                             "path of the SAR GeoTIFF (same grid)")
        self.add_output_help(QgsProcessingOutputRasterLayer("TRAIN_LABELS", "Training labels"),
                             "path of the training label raster (ground truth for training)")
        self.add_output_help(QgsProcessingOutputRasterLayer("TEST_LABELS", "Test labels"),
                             "path of the test label raster (test ground truth, or for 'Assess accuracy')")
        self.add_output_help(QgsProcessingOutputNumber("TRAIN_PIXELS", "Training pixels"),
                             "number of labelled training pixels")
        self.add_output_help(QgsProcessingOutputNumber("TEST_PIXELS", "Test pixels"),
                             "number of labelled test pixels")

    def processAlgorithm(self, parameters, context, feedback):
        out_dir = self.output_path(parameters, self.OUTPUT_FOLDER, context)
        os.makedirs(out_dir, exist_ok=True)
        args = ["--hs", self.file_path(parameters, self.HS_FILE, context),
                "--sar", self.file_path(parameters, self.SAR_FILE, context),
                "--train", self.file_path(parameters, self.TRAIN_FILE, context),
                "--test", self.file_path(parameters, self.TEST_FILE, context),
                "--out-dir", out_dir,
                "--scene", SCENES[self.parameterAsEnum(parameters, self.SCENE, context)]]
        paths = {pid: os.path.join(out_dir, name) for pid, (_key, name) in FILES.items()}
        res = self.run_runtime("import-mat", args, feedback, outputs=list(paths.values()))
        out = {self.OUTPUT_FOLDER: out_dir}
        for pid, (key, _name) in FILES.items():
            out[pid] = plain(res.get(key) or paths[pid])
            load_on_completion(context, out[pid], os.path.splitext(os.path.basename(out[pid]))[0], pid)
        out["TRAIN_PIXELS"] = plain(res.get("train_pixels"))
        out["TEST_PIXELS"] = plain(res.get("test_pixels"))
        return out
