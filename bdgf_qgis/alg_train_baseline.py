"""Train random-forest baseline: a spectral + SAR pixel classifier to compare BDGF against."""
from __future__ import annotations

from qgis.core import (QgsProcessingOutputNumber, QgsProcessingParameterEnum, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber)

from .algorithm import (MODEL_FILTER, REPORT_FILTER, BdgfAlgorithm, add_ground_truth, add_inputs, add_sampling,
                        check_validation_share, plain, sampling_args)


class TrainBaselineAlgorithm(BdgfAlgorithm):
    NAME = "train_baseline"
    DISPLAY_NAME = "Train random-forest baseline"
    GROUP = "Training"
    GROUP_ID = "training"
    INTRO = ("Trains a random forest on the pixel values of the hyperspectral and SAR rasters at the "
             "labelled pixels of the ground truth, and writes a model file that 'Classify raster' "
             "reads. Fast (seconds to minutes on a CPU): use it as a baseline and to check the data "
             "before the BDGF network. The report gives the accuracy on the held-out pixels.")
    POSITIVE = ("SAMPLES_PER_CLASS", "BLOCK_SIZE", "TREES")

    SPECTRAL = "SPECTRAL"
    SAR = "SAR"
    GROUND_TRUTH = "GROUND_TRUTH"
    CLASS_FIELD = "CLASS_FIELD"
    SAMPLES_PER_CLASS = "SAMPLES_PER_CLASS"
    SPLIT = "SPLIT"
    BLOCK_SIZE = "BLOCK_SIZE"
    VALIDATION_SHARE = "VALIDATION_SHARE"
    TREES = "TREES"
    SEED = "SEED"
    MODEL = "MODEL"
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):
        add_inputs(self, spectral=True, sar=True)
        add_ground_truth(self)
        add_sampling(self, validation_default=0.0, block_size=True)
        self.add(QgsProcessingParameterNumber(self.TREES, "Number of trees", QgsProcessingParameterNumber.Integer,
                                              200, minValue=1, maxValue=10000),
                 "Trees of the random forest, 1 to 10000; default 200. More trees: slower, slightly "
                 "more stable.")
        self.add(QgsProcessingParameterEnum("WINDOW", "Pixel features", options=["pixel values",
                                            "3 x 3 window means", "9 x 9 window means"], defaultValue=0, optional=True),
                 "What the forest sees of each pixel: 0 = its own values (default), 1 = the mean of every band "
                 "over its 3 x 3 window, 2 = over its 9 x 9 window (spatial context a careful analyst adds by "
                 "hand; smoother maps, blurred class edges). From qgis_process pass the number.", advanced=True)
        self.add_seed()
        self.add(QgsProcessingParameterFileDestination(self.MODEL, "Model file", MODEL_FILTER),
                 "The .bdgf model file to write (input of 'Classify raster' and 'Assess accuracy').")
        self.add(QgsProcessingParameterFileDestination(self.REPORT, "Training report", REPORT_FILTER,
                                                       optional=True, createByDefault=True),
                 "HTML report with the split used, sample counts and held-out accuracy; optional.")
        self.add_output_help(QgsProcessingOutputNumber("TRAIN_PIXELS", "Training pixels"),
                             "number of labelled pixels used for training")
        self.add_output_help(QgsProcessingOutputNumber("TEST_PIXELS", "Test pixels"),
                             "number of labelled pixels held out for testing")

    def check_values(self, parameters, context):
        return check_validation_share(self, parameters, context)

    def processAlgorithm(self, parameters, context, feedback):
        model = self.output_path(parameters, self.MODEL, context, (".bdgf",))
        report = self.output_path(parameters, self.REPORT, context)
        args = sampling_args(self, parameters, context, feedback)
        args += ["--block-size", self.parameterAsInt(parameters, self.BLOCK_SIZE, context),
                 "--trees", self.parameterAsInt(parameters, self.TREES, context),
                 "--features", ("pixel", "mean3", "mean9")[self.parameterAsEnum(parameters, "WINDOW", context)],
                 "--seed", self.parameterAsInt(parameters, self.SEED, context),
                 "--model", model]
        if report:
            args += ["--report", report]
        res = self.run_runtime("train-baseline", args, feedback, outputs=[model, report])
        return {
            self.MODEL: plain(res.get("model", model)),
            self.REPORT: plain(res.get("report", report)),
            "TRAIN_PIXELS": plain(res.get("train_pixels")),
            "TEST_PIXELS": plain(res.get("test_pixels")),
        }
