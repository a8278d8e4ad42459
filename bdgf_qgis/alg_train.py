"""Train BDGF: the multi-branch (CNN, transformer, Mamba) network guided by diffusion features."""
from __future__ import annotations

from qgis.core import QgsProcessingParameterBoolean, QgsProcessingParameterFileDestination, QgsProcessingParameterNumber

from .algorithm import (MODEL_FILTER, REPORT_FILTER, BdgfAlgorithm, add_ground_truth, add_inputs, add_sampling,
                        check_validation_share, plain, sampling_args)

#: the runtime's default (bdgf_core/testsample.py TEST_CAP; not imported: the plugin loads no torch)
TEST_CAP = 2000

#: (parameter id, description, runtime switch that turns it off)
ABLATIONS = (
    ("CNN", "CNN branch", "--no-cnn"),
    ("TRANSFORMER", "Transformer branch", "--no-transformer"),
    ("MAMBA", "Mamba branch", "--no-mamba"),
    ("GUIDE_CNN", "Diffusion guidance of the CNN branch", "--no-guide-cnn"),
    ("GUIDE_TRANSFORMER", "Diffusion guidance of the transformer branch", "--no-guide-transformer"),
    ("GUIDE_MAMBA", "Diffusion guidance of the Mamba branch", "--no-guide-mamba"),
    ("MUTUAL", "Mutual learning between branches", "--no-mutual"),
)


class TrainAlgorithm(BdgfAlgorithm):
    NAME = "train"
    DISPLAY_NAME = "Train BDGF"
    GROUP = "Training"
    GROUP_ID = "training"
    INTRO = ("Trains the BDGF classifier: CNN, transformer and Mamba branches on patches of the "
             "hyperspectral and SAR rasters, each guided by the diffusion features of 'Pretrain "
             "DDPM', fused and trained with mutual learning, on the labelled pixels of the ground "
             "truth. Writes a model file for 'Classify raster' and a report with held-out accuracy. "
             "The branch switches are for ablation studies; at least one branch must stay on.")
    POSITIVE = ("SAMPLES_PER_CLASS", "EPOCHS", "BATCH_SIZE")

    SPECTRAL = "SPECTRAL"
    SAR = "SAR"
    FEATURES = "FEATURES"
    GROUND_TRUTH = "GROUND_TRUTH"
    CLASS_FIELD = "CLASS_FIELD"
    SAMPLES_PER_CLASS = "SAMPLES_PER_CLASS"
    SPLIT = "SPLIT"
    VALIDATION_SHARE = "VALIDATION_SHARE"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    PATCH_SIZE = "PATCH_SIZE"
    DEVICE = "DEVICE"
    SEED = "SEED"
    MODEL = "MODEL"
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):
        add_inputs(self, spectral=True, sar=True, features=True, features_optional=True)
        add_ground_truth(self)
        add_sampling(self, validation_default=0.1, block_size=False)
        self.add(QgsProcessingParameterNumber(self.EPOCHS, "Epochs", QgsProcessingParameterNumber.Integer,
                                              100, minValue=1, maxValue=100000),
                 "Passes over the training samples, 1 to 100000; default 100.")
        self.add(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer,
                                              64, minValue=1, maxValue=65536),
                 "Patches per optimisation step, 1 to 65536; default 64.", advanced=True)
        self.add(QgsProcessingParameterNumber("VAL_CAP", "Validation pixels scored per epoch",
                                              QgsProcessingParameterNumber.Integer, 200, minValue=1,
                                              maxValue=10000000, optional=True),
                 "The best epoch is chosen on a fixed, stratified subset of at most this many validation "
                 "pixels (the same each epoch, drawn from the seed), so choosing costs a fraction of the "
                 "training; the report gives its size. Default 200.", advanced=True)
        self.add(QgsProcessingParameterNumber("TEST_CAP", "Held-out pixels tested after training",
                                              QgsProcessingParameterNumber.Integer, TEST_CAP, minValue=0,
                                              maxValue=100000000, optional=True),
                 "The report's test accuracy is estimated from a stratified sample of at most this many held-out "
                 "pixels (an equal part per class, drawn from the seed), with 95 % intervals, so that testing "
                 "does not cost as much as the training; 0 tests every held-out pixel. 'Assess accuracy' on the "
                 f"classified map gives every pixel. Default {TEST_CAP}.", advanced=True)
        self.add(QgsProcessingParameterNumber(self.PATCH_SIZE, "Patch size (pixels)",
                                              QgsProcessingParameterNumber.Integer, 9, minValue=1, maxValue=31),
                 "Side of the square patch around each pixel, odd, 1 to 31; the paper uses 9.", advanced=True)
        self.add_device()
        self.add_processes()
        self.add_seed()
        for pid, desc, switch in ABLATIONS:
            self.add(QgsProcessingParameterBoolean(pid, desc, True),
                     f"On by default; off passes {switch} to the runtime (ablation).", advanced=True)
        self.add(QgsProcessingParameterBoolean("CENTRE", "Centre pixel into the fused head (class edges)", False,
                                               optional=True),
                 "Not in the paper: the centre pixel's own spectral and SAR values reach the fused head through a "
                 "small network, so pixels on class edges are not decided by their neighbours. Off by default "
                 "(docs/bench/edges.md: sharper edges on the standard demo scene, worse on the hard one).",
                 advanced=True)
        self.add(QgsProcessingParameterBoolean("FLIPS", "Flip and rotate training patches", False, optional=True),
                 "Not in the paper: training patches flipped and rotated at random. Off by default.", advanced=True)
        self.add(QgsProcessingParameterNumber("MIX_SHARE", "Mixed-patch share (class edges)",
                                              QgsProcessingParameterNumber.Double, 0.0, minValue=0.0, maxValue=1.0,
                                              optional=True),
                 "Not in the paper: this share of training patches get the far side of a random line from a patch "
                 "of another class, the label staying the centre's, so the network sees edges. 0 to 1; default 0.",
                 advanced=True)
        self.add(QgsProcessingParameterBoolean("ADAPTIVE", "Edge-aware patches (class edges)", True, optional=True),
                 "Not in the paper: in each patch, neighbours that look unlike the centre pixel (further from it "
                 "than 19 in 20 of a training pixel's direct neighbours are, in spectrum or SAR) take the centre's "
                 "values, so a pixel next to a class edge is not decided by the other class. On by default "
                 "(docs/bench/edges.md: the whole map and its edges more accurate on both demo scenes); off is the "
                 "paper's patch.", advanced=True)
        self.add(QgsProcessingParameterFileDestination(self.MODEL, "Model file", MODEL_FILTER),
                 "The .bdgf model file to write (input of 'Classify raster' and 'Assess accuracy').")
        self.add(QgsProcessingParameterFileDestination(self.REPORT, "Training report", REPORT_FILTER,
                                                       optional=True, createByDefault=True),
                 "HTML report with the split used, the training curve and held-out accuracy; optional.")

    def check_values(self, parameters, context):
        message = check_validation_share(self, parameters, context)
        if message:
            return message
        branches = [pid for pid in ("CNN", "TRANSFORMER", "MAMBA")
                    if parameters.get(pid) is None or self.parameterAsBool(parameters, pid, context)]
        if parameters.get(self.PATCH_SIZE) is not None and self.parameterAsInt(parameters, self.PATCH_SIZE,
                                                                               context) % 2 == 0:
            return "The patch size must be odd (1, 3, 5, 7, 9...) so that the patch is centred on its pixel."
        if not branches:
            return "At least one of the CNN, TRANSFORMER and MAMBA branches must stay on."
        guided = [pid for pid in ("GUIDE_CNN", "GUIDE_TRANSFORMER", "GUIDE_MAMBA")
                  if parameters.get(pid) is None or self.parameterAsBool(parameters, pid, context)]
        if guided and not parameters.get(self.FEATURES):
            return ("The diffusion features raster (FEATURES) guides the branches: give the FEATURES output of "
                    f"'Pretrain DDPM', or turn the guidance off ({', '.join(guided)}) to train without it.")
        return None

    def processAlgorithm(self, parameters, context, feedback):
        model = self.output_path(parameters, self.MODEL, context, (".bdgf",))
        report = self.output_path(parameters, self.REPORT, context)
        args = sampling_args(self, parameters, context, feedback, features=True)
        args += ["--epochs", self.parameterAsInt(parameters, self.EPOCHS, context),
                 "--batch-size", self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                 "--patch-size", self.parameterAsInt(parameters, self.PATCH_SIZE, context),
                 "--val-cap", self.parameterAsInt(parameters, "VAL_CAP", context) or 200,
                 "--test-cap", (TEST_CAP if parameters.get("TEST_CAP") in (None, "")
                                else self.parameterAsInt(parameters, "TEST_CAP", context)),
                 "--device", self.device(parameters, context),
                 "--seed", self.parameterAsInt(parameters, self.SEED, context)]
        for pid, _desc, switch in ABLATIONS:
            if not self.parameterAsBool(parameters, pid, context):
                args.append(switch)
        if parameters.get("CENTRE") not in (None, "") and self.parameterAsBool(parameters, "CENTRE", context):
            args.append("--centre")
        if parameters.get("FLIPS") not in (None, "") and self.parameterAsBool(parameters, "FLIPS", context):
            args.append("--flips")
        if parameters.get("ADAPTIVE") not in (None, ""):
            args.append("--adaptive" if self.parameterAsBool(parameters, "ADAPTIVE", context) else "--no-adaptive")
        mix = self.parameterAsDouble(parameters, "MIX_SHARE", context) if parameters.get("MIX_SHARE") else 0.0
        if mix > 0:
            args += ["--mix-share", repr(mix)]
        args += ["--model", model]
        if report:
            args += ["--report", report]
        res = self.run_runtime("train", args, feedback, outputs=[model, report],
                               processes=self.processes(parameters, context))
        return {self.MODEL: plain(res.get("model", model)), self.REPORT: plain(res.get("report", report))}
