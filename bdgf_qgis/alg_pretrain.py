"""Pretrain DDPM: self-supervised diffusion pretraining and extraction of the diffusion features."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from .algorithm import MODEL_FILTER, RASTER_EXTENSIONS, BdgfAlgorithm, add_inputs, input_args, plain

#: indices are the PROFILE values of qgis_process and graphical models: new ones go at the end
PROFILES = ("paper", "fast", "auto")
DEFAULT_TIMESTEPS = "5,10,50,100,200,400"
MAX_TIMESTEP = 1000


def parse_timesteps(text: str):
    """'5,10,50' -> [5, 10, 50]; raises ValueError on anything else."""
    values = [int(t) for t in str(text).replace(" ", "").split(",") if t != ""]
    if not values:
        raise ValueError("no timestep given")
    if any(v <= 0 or v > MAX_TIMESTEP for v in values):
        raise ValueError("timesteps must be integers in 1..1000")
    return values


class PretrainAlgorithm(BdgfAlgorithm):
    NAME = "pretrain"
    DISPLAY_NAME = "Pretrain DDPM"
    GROUP = "Training"
    GROUP_ID = "training"
    INTRO = ("Trains the diffusion model (a denoising diffusion probabilistic model, DDPM) on the "
             "hyperspectral and SAR rasters without labels, on tiles covering the whole scene, then "
             "writes the model and the diffusion features (decoder activations at the chosen "
             "timesteps) as a raster on the scene's grid, input of 'Train BDGF' and 'Classify "
             "raster'. Long on a CPU: the 'fast' profile or fewer steps give a quick first run; a "
             "GPU (DEVICE) helps most.")
    POSITIVE = ()  # 0 means "the profile's value"

    SPECTRAL = "SPECTRAL"
    SAR = "SAR"
    STEPS = "STEPS"
    BATCH_SIZE = "BATCH_SIZE"
    TILE_SIZE = "TILE_SIZE"
    TIMESTEPS = "TIMESTEPS"
    MASKING = "MASKING"
    SPECKLE = "SPECKLE"
    PROFILE = "PROFILE"
    DEVICE = "DEVICE"
    SEED = "SEED"
    MODEL = "MODEL"
    FEATURES = "FEATURES"

    def initAlgorithm(self, config=None):
        add_inputs(self, spectral=True, sar=True)
        self.add(QgsProcessingParameterNumber(self.STEPS, "Training steps (0 = the profile's)",
                                              QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=10000000),
                 "Optimisation steps (one batch of tiles each); 0 (default) takes the profile's number "
                 "(the log says which). More steps give better features and take longer.")
        self.add(QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (0 = the profile's)",
                                              QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=4096),
                 "Tiles per step, 0 to 4096; 0 (default) takes the profile's (paper: 20, as in SpectralDiff). "
                 "Lower it when memory runs out.", advanced=True)
        self.add(QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0 = the profile's)",
                                              QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=1024),
                 "Side of the square training tiles, 8 to 1024 pixels; 0 (default) takes the profile's "
                 "(paper: 64).", advanced=True)
        self.add(QgsProcessingParameterString(self.TIMESTEPS, "Feature timesteps (empty = the profile's)", "",
                                              optional=True),
                 f"Comma-separated diffusion timesteps at which features are extracted, each in "
                 f"1..{MAX_TIMESTEP} (below the model's step count); empty (default) takes the profile's "
                 f"(paper: {DEFAULT_TIMESTEPS}). Fewer timesteps are faster.", advanced=True)
        self.add(QgsProcessingParameterBoolean(self.MASKING, "Adaptive modality masking", True),
                 "Mask the spectral part of whole samples and of single elements with a probability that "
                 "grows with training (the paper's Algorithm 1), so the model also learns from the SAR; "
                 "default on. Off gives the paper's 'Concatenate Diff' ablation.", advanced=True)
        self.add(QgsProcessingParameterBoolean(self.SPECKLE, "SAR speckle noise", True),
                 "Use speckle (multiplicative) noise for the SAR channels; default on. Turn off for an "
                 "ablation.", advanced=True)
        self.add(QgsProcessingParameterEnum(self.PROFILE, "Profile",
                                            options=["paper", "fast", "auto (fast on a CPU, paper on a GPU)"],
                                            defaultValue=2),
                 "0 = paper (the paper's denoiser, SpectralDiff's U-Net, 30,000 steps: hours on a GPU, "
                 "weeks on a CPU), 1 = fast (a smaller network and schedule: minutes on a CPU), 2 = auto "
                 "(default: fast when the run is on a CPU, paper on a GPU; the log says which). Before the "
                 "first steps are done the run prints its estimated total time. From qgis_process pass "
                 "the number.")
        self.add_device()
        self.add_processes()
        self.add_seed()
        self.add(QgsProcessingParameterFileDestination(self.MODEL, "Diffusion model file", MODEL_FILTER),
                 "The .bdgf diffusion model to write (DIFFUSION_MODEL of 'Classify raster').")
        self.add(QgsProcessingParameterRasterDestination(self.FEATURES, "Diffusion features"),
                 "The diffusion features raster to write (GeoTIFF, float32, on the scene's grid; "
                 "FEATURES of 'Train BDGF' and 'Classify raster').")

    def check_values(self, parameters, context):
        tile = parameters.get(self.TILE_SIZE)
        if tile is not None and 0 < self.parameterAsInt(parameters, self.TILE_SIZE, context) < 8:
            return "The tile size (TILE_SIZE) must be 0 (the profile's) or at least 8 pixels."
        text = self.parameterAsString(parameters, self.TIMESTEPS, context) if parameters.get(self.TIMESTEPS) else ""
        if text.strip():
            try:
                parse_timesteps(text)
            except ValueError:
                return (f"Feature timesteps (TIMESTEPS) must be comma-separated integers in 1..{MAX_TIMESTEP}, "
                        f"e.g. {DEFAULT_TIMESTEPS}; got '{text}'.")
        return None

    def processAlgorithm(self, parameters, context, feedback):
        model = self.output_path(parameters, self.MODEL, context, (".bdgf",))
        features = self.output_path(parameters, self.FEATURES, context, RASTER_EXTENSIONS)
        args = input_args(self, parameters, context)
        for pid, flag in ((self.STEPS, "--steps"), (self.BATCH_SIZE, "--batch-size"), (self.TILE_SIZE, "--tile-size")):
            value = self.parameterAsInt(parameters, pid, context)
            if value > 0:  # 0: leave it to the profile
                args += [flag, value]
        text = self.parameterAsString(parameters, self.TIMESTEPS, context) or ""
        if text.strip():
            args += ["--timesteps", ",".join(str(t) for t in parse_timesteps(text))]
        if not self.parameterAsBool(parameters, self.MASKING, context):
            args.append("--no-masking")
        if not self.parameterAsBool(parameters, self.SPECKLE, context):
            args.append("--no-speckle")
        args += ["--device", self.device(parameters, context),
                 "--seed", self.parameterAsInt(parameters, self.SEED, context),
                 "--profile", PROFILES[self.parameterAsEnum(parameters, self.PROFILE, context)],
                 "--model", model, "--features", features]
        res = self.run_runtime("pretrain", args, feedback, outputs=[model, features],
                               processes=self.processes(parameters, context))
        return {self.MODEL: plain(res.get("model", model)), self.FEATURES: plain(res.get("features", features))}
