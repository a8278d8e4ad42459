"""Shared base of the BDGF Processing algorithms: help from the parameters, layer paths, the bridge."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateTransformContext,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameters,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import runtime

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"

DEVICES = ("auto", "cpu", "cuda")
SPLITS = ("polygons", "blocks", "pixels")
RASTER_EXTENSIONS = (".tif", ".tiff")
MODEL_FILTER = "BDGF model (*.bdgf)"
REPORT_FILTER = "HTML report (*.html)"

DEVICE_HELP = ("Where the network runs: 0 = auto (the GPU when PyTorch sees one, else the CPU; the log "
               "says which), 1 = cpu, 2 = cuda (fails clearly when no GPU is usable, never falls back "
               "silently). From qgis_process pass the number.")
SPLIT_HELP = ("How labelled pixels are divided into training and test sets: 0 = polygons (whole "
              "polygons, or connected regions of a label raster, go to one side: honest accuracy, the "
              "default), 1 = blocks (square blocks of pixels, 32 by default), 2 = pixels (the paper's "
              "random pixels: neighbouring training and test patches overlap and flatter the accuracy). "
              "The validation share is set apart the same way. With a test ground truth, only the "
              "validation share is split this way. From qgis_process pass the number.")
GROUND_TRUTH_TYPES = [QgsProcessing.TypeVectorAnyGeometry, QgsProcessing.TypeRaster]


class BdgfAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY_NAME, GROUP, GROUP_ID, INTRO and define
    ``initAlgorithm`` with :meth:`add`, then implement ``processAlgorithm``."""

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    INTRO = ""
    #: parameter ids whose integer value must be > 0
    POSITIVE: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._help: List[Tuple[str, str, str]] = []  # (id, description, help)
        self._output_help: List[Tuple[str, str, str]] = []

    # --- identity -----------------------------------------------------------------------
    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.DISPLAY_NAME

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def shortHelpString(self) -> str:
        lines = [self.INTRO.strip(), "", "Parameters:"]
        for pid, desc, text in self._help:
            lines.append(f"- {desc} ({pid}): {text}")
        if self._output_help:
            lines += ["", "Outputs:"]
            for pid, desc, text in self._output_help:
                lines.append(f"- {desc} ({pid}): {text}")
        return "\n".join(lines)

    # --- definitions --------------------------------------------------------------------
    def add(self, param: QgsProcessingParameterDefinition, help: str, advanced: bool = False) -> None:
        """Add a parameter with its one-line help (shown in shortHelpString)."""
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        if hasattr(param, "setHelp"):
            param.setHelp(help)
        self.addParameter(param)
        self._help.append((param.name(), param.description(), help))

    def add_output_help(self, output, help: str) -> None:
        """Add an output (not a destination parameter) with its help."""
        self.addOutput(output)
        self._output_help.append((output.name(), output.description(), help))

    def add_device(self) -> None:
        self.add(QgsProcessingParameterEnum("DEVICE", "Device", options=list(DEVICES), defaultValue=0),
                 DEVICE_HELP, advanced=True)

    def add_seed(self) -> None:
        self.add(QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer,
                                              defaultValue=0, minValue=0),
                 "Seed of every random choice (sampling, split, initialisation); the same seed and "
                 "data give the same result. Any integer >= 0; default 0.", advanced=True)

    # --- checks -------------------------------------------------------------------------
    def checkParameterValues(self, parameters: Dict[str, Any], context: QgsProcessingContext):
        for pid in self.POSITIVE:
            if self.parameterDefinition(pid) is None or parameters.get(pid) is None:
                continue
            try:
                value = float(self.parameterAsDouble(parameters, pid, context))
            except Exception:
                return False, f"{pid} must be a number."
            if value <= 0:
                desc = self.parameterDefinition(pid).description()
                return False, f"{desc} ({pid}) must be greater than 0, got {value:g}."
        message = (check_ground_truth(self, parameters, context) or self.check_values(parameters, context)
                   or self.check_outputs_spare_inputs(parameters, context))
        if message:
            return False, message
        for d in self.parameterDefinitions():
            path = self.file_value(parameters, d.name(), context) if d.type() in ("raster", "layer") else None
            if path is not None:  # checked by the runtime; loading it as a layer would write beside it
                continue
            if d.type() == "source" and _is_raster_file(parameters.get(d.name())):
                continue  # GROUND_TRUTH=labels.tif: a label raster (see ground_truth_args)
            if not d.checkValueIsAcceptable(parameters.get(d.name()), context):
                return False, f"Incorrect parameter value for {d.description()} ({d.name()})."
        return True, ""

    def check_outputs_spare_inputs(self, parameters, context) -> Optional[str]:
        """A message when an output (or a file written beside it) would overwrite an input or one of its
        files (.aux.xml, .qml, .ovr, a shapefile's parts); checked before any work starts."""
        inputs, outputs = [], []
        for d in self.parameterDefinitions():
            pid = d.name()
            if parameters.get(pid) in (None, ""):
                continue
            label = f"{d.description()} ({pid})"
            if d.isDestination():
                if d.type() == "folderDestination":
                    continue
                value = parameters.get(pid)
                sink = getattr(value, "sink", None)
                text = sink.staticValue() if sink is not None else value
                if not isinstance(text, str) or not text or text == "TEMPORARY_OUTPUT" or text.startswith("memory:"):
                    continue
                outputs.append((label, absolute(text)))
            elif d.type() == "file":
                path = self.parameterAsFile(parameters, pid, context)
                if path:
                    inputs.append((label, absolute(path)))
            elif self.file_value(parameters, pid, context):
                inputs.append((label, self.file_value(parameters, pid, context)))
            elif d.type() in ("raster", "vector", "source", "layer"):
                layer = QgsProcessingParameters.parameterAsLayer(d, parameters, context)
                if layer is not None:
                    path = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source()).get("path")
                    if path:
                        inputs.append((label, absolute(path)))
        for out_label, out in outputs:
            for written in written_beside(out):
                for in_label, src in inputs:
                    if any(same_file(written, f) for f in belonging_to(src)):
                        return (f"{out_label} would overwrite the input {in_label} or one of its files ({written}): "
                                f"a run never overwrites its inputs. Choose another file for {out_label}.")
        return None

    def check_values(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> Optional[str]:
        """Subclass hook: return a message when a value is absurd, else None."""
        return None

    # --- reading parameters -------------------------------------------------------------
    def raster_path(self, parameters, pid: str, context, optional: bool = False) -> Optional[str]:
        """The file path of a raster parameter; refuse layers that are not files GDAL reads."""
        path = self.file_value(parameters, pid, context)
        if path is not None:
            if not gdal_opens(path, raster=True):
                raise QgsProcessingException(f"{self._desc(pid)} ({pid}): {path} is not a raster GDAL can read; give "
                                             "a GeoTIFF (or another GDAL raster format).")
            return path
        layer = self.parameterAsRasterLayer(parameters, pid, context)
        if layer is None:
            if optional:
                return None
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}): no raster layer was given or it "
                                         "could not be opened.")
        return raster_layer_path(layer, f"{self._desc(pid)} ({pid})")

    def check_field(self, pid: str, fields, field: Optional[str]) -> None:
        """Refuse a class field the layer of ``pid`` does not have, listing those it has."""
        if field and fields.indexOf(field) < 0:
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}) has no field '{field}'; its fields "
                                         f"are: {', '.join(fields.names())}. Choose the field holding the classes "
                                         "(CLASS_FIELD).")

    def raster_paths(self, parameters, pid: str, context) -> List[str]:
        """The file paths of a multiple-raster parameter, in the order given."""
        if self.parameterDefinition(pid) is None or not parameters.get(pid):
            return []
        values = parameters[pid] if isinstance(parameters[pid], (list, tuple)) else [parameters[pid]]
        paths = []
        for i, value in enumerate(values):
            one = {pid: value}
            path = self.file_value(one, pid, context)
            if path is None:
                layer = QgsProcessingUtils.mapLayerFromString(str(value), context, True,
                                                              QgsProcessingUtils.LayerHint.Raster)
                if not isinstance(layer, QgsRasterLayer):
                    raise QgsProcessingException(f"{self._desc(pid)} ({pid}): item {i + 1} ({value}) is not a "
                                                 "raster layer or file.")
                path = raster_layer_path(layer, f"{self._desc(pid)} ({pid})")
            elif not gdal_opens(path, raster=True):
                raise QgsProcessingException(f"{self._desc(pid)} ({pid}): {path} is not a raster GDAL can read.")
            paths.append(path)
        return paths

    def file_value(self, parameters, pid: str, context) -> Optional[str]:
        """The path when a parameter's value names a file rather than a layer of the project.

        Such files are read without loading a QGIS layer: a raster layer computes statistics for its
        renderer, and GDAL then writes them to a .aux.xml beside the user's file."""
        value = parameters.get(pid)
        if not isinstance(value, str) or not value:
            return None
        if QgsProcessingUtils.mapLayerFromString(value, context, False) is not None:
            return None
        path = value.split("|")[0]
        return absolute(path) if os.path.isfile(path) else None

    def feature_source_path(self, parameters, pid: str, context, feedback,
                            field: Optional[str] = None) -> Tuple[str, str]:
        """(file, layer name) of a feature-source parameter for the runtime; a selection, a filter or a
        non-file layer is exported to a temporary GeoPackage first (QGIS does it)."""
        source = self.parameterAsSource(parameters, pid, context)
        if source is None:
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}): no vector layer was given or it could not "
                                         "be opened; give labelled polygons or points.")
        self.check_field(pid, source.fields(), field)
        if source.featureCount() == 0:
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}) has no features (with 'Selected features "
                                         "only', select some first).")
        path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, pid, context, ["gpkg", "shp", "geojson", "json", "fgb", "sqlite", "gml", "kml", "tab"],
            "gpkg", feedback)
        return absolute(path), layer_name or ""

    def ground_truth_path(self, parameters, pid: str, context, feedback, field: Optional[str] = None,
                          optional: bool = False) -> Optional[str]:
        """A file path for a ground-truth parameter: labelled polygons (see vector_path) or a label raster."""
        path = self.file_value(parameters, pid, context)
        if path is not None and gdal_opens(path, raster=True):
            return path
        layer = self.parameterAsLayer(parameters, pid, context)
        if layer is None:
            if optional and not parameters.get(pid):
                return None
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}): no layer was given or it could not be "
                                         "opened; give labelled polygons or a label raster.")
        if isinstance(layer, QgsRasterLayer):
            return raster_layer_path(layer, f"{self._desc(pid)} ({pid})")
        if not isinstance(layer, QgsVectorLayer):
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}) is neither a vector layer nor a raster; give "
                                         "labelled polygons or a label raster.")
        self.check_field(pid, layer.fields(), field)
        return vector_layer_path(layer, feedback)

    def file_path(self, parameters, pid: str, context) -> Optional[str]:
        value = self.parameterAsFile(parameters, pid, context)
        return absolute(value) if value else None

    def output_path(self, parameters, pid: str, context, extensions: Sequence[str] = ()) -> Optional[str]:
        """A destination path ('' / None when an optional output was skipped)."""
        definition = self.parameterDefinition(pid)
        if definition.type() == "rasterDestination":
            value = self.parameterAsOutputLayer(parameters, pid, context)
        elif definition.type() == "folderDestination":
            value = self.parameterAsString(parameters, pid, context)
        else:
            value = self.parameterAsFileOutput(parameters, pid, context)
        if not value:
            return None
        value = absolute(value)
        if extensions and not value.lower().endswith(tuple(e.lower() for e in extensions)):
            raise QgsProcessingException(f"{self._desc(pid)} ({pid}) must be a {' or '.join(extensions)} "
                                         f"file, got {value}.")
        return value

    def field_name(self, parameters, pid: str, context, default: str = "class") -> str:
        try:
            fields = self.parameterAsFields(parameters, pid, context)
        except Exception:
            fields = []
        if fields:
            return fields[0]
        return self.parameterAsString(parameters, pid, context) or default

    def device(self, parameters, context) -> str:
        return DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]

    def split(self, parameters, context) -> str:
        return SPLITS[self.parameterAsEnum(parameters, "SPLIT", context)]

    def _desc(self, pid: str) -> str:
        d = self.parameterDefinition(pid)
        return d.description() if d is not None else pid

    # --- running ------------------------------------------------------------------------
    def run_runtime(self, command: str, args: Sequence[Any], feedback: QgsProcessingFeedback,
                    outputs: Iterable[Optional[str]] = (), processes: int = 1) -> Dict[str, Any]:
        return runtime.run_command(command, [str(a) for a in args], feedback, outputs, processes)

    def add_processes(self) -> None:
        self.add(QgsProcessingParameterNumber("PROCESSES", "Processes (data parallel)",
                                              QgsProcessingParameterNumber.Integer, 1, optional=True, minValue=1, maxValue=256),
                 "Processes on this machine, 1 to 256; default 1. Above 1 the runtime runs under torchrun: "
                 "one process per GPU on CUDA (use at most the GPU count), or CPU processes sharing the cores "
                 "(Gloo). Pretrain and Train: DistributedDataParallel, the batch size stays the global one, so "
                 "the results do not depend on it. Classify: the blocks of rows are shared out, the memory "
                 "budget applies to each process, the outputs are those of one process. For several machines "
                 "see the README.", advanced=True)

    def processes(self, parameters, context) -> int:
        if parameters.get("PROCESSES") is None:
            return 1
        return max(1, self.parameterAsInt(parameters, "PROCESSES", context))


def written_beside(output: str) -> List[str]:
    """The output and what a run writes beside it: the run log; for a raster, GDAL's .aux.xml and the .qml
    style; for an HTML report, its .json."""
    stem, ext = os.path.splitext(output)
    files = [output, output + ".log"]
    if ext.lower() in (".tif", ".tiff"):
        files += [output + ".aux.xml", stem + ".qml"]
    return files + ([stem + ".json"] if ext.lower() in (".html", ".htm") else [])


def belonging_to(path: str) -> List[str]:
    """An input and the files that go with it, which a run must leave untouched (a model file has none)."""
    stem, ext = os.path.splitext(path)
    files = [path]
    if ext.lower() not in (".bdgf", ".html", ".htm", ".json", ".csv"):
        files += [path + ".aux.xml", path + ".ovr", path + ".msk", stem + ".qml"]
    if ext.lower() == ".shp":
        files += [stem + e for e in (".shx", ".dbf", ".prj", ".cpg", ".qix", ".qmd")]
    return files


def same_file(a: str, b: str) -> bool:
    """True when two paths name one file (links and '..' resolved)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def raster_layer_path(layer: QgsRasterLayer, what: str) -> str:
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"{what} is a '{layer.providerType()}' layer; the BDGF runtime reads "
                                     "raster files only (GeoTIFF or another GDAL format). Save the layer "
                                     "as a GeoTIFF first (Export > Save As...).")
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise QgsProcessingException(f"{what} is not a file on disk ({layer.source()}); the BDGF runtime "
                                     "reads raster files only. Save the layer as a GeoTIFF first.")
    return absolute(path)


def vector_layer_path(layer: QgsVectorLayer, feedback: Optional[QgsProcessingFeedback] = None) -> str:
    """The layer's OGR file when it is a plain file layer; otherwise a temporary GeoPackage copy."""
    if layer.providerType() == "ogr":
        parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        path = parts.get("path") or ""
        if (os.path.isfile(path) and not layer.subsetString() and not parts.get("subset")
                and _only_layer(path, parts.get("layerName"), parts.get("layerId"))):
            return absolute(path)
    target = QgsProcessingUtils.generateTempFilename("ground_truth.gpkg")
    if feedback is not None:
        feedback.pushInfo(f"Exporting {layer.name()} ({layer.featureCount()} features) to {target}, "
                          "since the runtime reads files only")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "ground_truth"
    options.fileEncoding = "UTF-8"
    if hasattr(QgsVectorFileWriter, "writeAsVectorFormatV3"):
        result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, target, QgsCoordinateTransformContext(), options)
    else:  # pragma: no cover - QGIS < 3.20
        result = QgsVectorFileWriter.writeAsVectorFormatV2(layer, target, QgsCoordinateTransformContext(), options)
    error, message = result[0], (result[1] if len(result) > 1 else "")
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Could not export {layer.name()} to a GeoPackage for the runtime: "
                                     f"{message}")
    return target


def absolute(path: str) -> str:
    """An absolute path: the runtime runs in the plugin's folder, not in the caller's."""
    if not path or path.startswith("/vsi") or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _only_layer(path: str, layer_name: Optional[str], layer_id: Any) -> bool:
    """True when ``path`` holds one layer only (the runtime then reads the right one from the path)."""
    try:
        from osgeo import ogr

        ds = ogr.Open(path)
        if ds is None or ds.GetLayerCount() != 1:
            return False
        name = ds.GetLayer(0).GetName()
    except Exception:
        return False
    return (not layer_name or layer_name == name) and layer_id in (None, "", 0, "0")


def plain(value: Any) -> Any:
    """A value qgis_process prints: str, int, float or None."""
    if value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# --- parameter groups shared by the training algorithms -------------------------------------
SAR_RESAMPLING = ("auto", "bilinear", "average")


def add_inputs(alg: BdgfAlgorithm, spectral: bool = True, sar: bool = True, features: bool = False,
               features_optional: bool = False, resampling: bool = True) -> None:
    """SPECTRAL and SAR (one raster each, with more in SPECTRAL_EXTRA / SAR_EXTRA), SAR_RESAMPLING, FEATURES."""
    if spectral:
        alg.add(QgsProcessingParameterRasterLayer("SPECTRAL", "Hyperspectral (or multispectral) raster"),
                "The optical image, one band per wavelength, as a GDAL raster file (GeoTIFF); its grid (size, "
                "pixel size, CRS) is the grid of every output. Values in any unit; each band is scaled by the "
                "runtime.")
        alg.add(QgsProcessingParameterMultipleLayers("SPECTRAL_EXTRA", "More spectral rasters (optional)",
                                                     QgsProcessing.TypeRaster, optional=True),
                "Further spectral rasters on the same grid (e.g. Sentinel-2 bands delivered as separate "
                "files): their bands follow those of SPECTRAL, in the order listed.")
    if sar:
        alg.add(QgsProcessingParameterRasterLayer("SAR", "SAR raster"),
                "The SAR image (e.g. VV/VH backscatter, linear power or dB). On another grid than the spectral "
                "raster it is resampled onto it (see SAR_RESAMPLING); it must cover the scene.")
        alg.add(QgsProcessingParameterMultipleLayers("SAR_EXTRA", "More SAR rasters (optional)",
                                                     QgsProcessing.TypeRaster, optional=True),
                "Further SAR rasters (e.g. VH when SAR is VV, as Sentinel-1 products come): stacked after "
                "SAR's bands, in the order listed, each resampled onto the spectral grid when needed.")
        if resampling:
            alg.add(QgsProcessingParameterEnum("SAR_RESAMPLING", "SAR resampling", options=list(SAR_RESAMPLING),
                                               defaultValue=0, optional=True),
                    "How SAR on another grid reaches the spectral grid: 0 = auto (average in linear power - "
                    "multilooking - when the SAR pixels are finer than the spectral ones, else bilinear), "
                    "1 = bilinear, 2 = average in linear power. dB inputs are converted to power and back. "
                    "Classify uses the model's choice. From qgis_process pass the number.", advanced=True)
    if features:
        alg.add(QgsProcessingParameterRasterLayer("FEATURES", "Diffusion features raster",
                                                  optional=features_optional),
                "The diffusion feature raster written by 'Pretrain DDPM' (FEATURES output), on the "
                "same grid." + (" Optional." if features_optional else ""))


def input_args(alg: BdgfAlgorithm, parameters, context) -> List[str]:
    """--spectral FILE... --sar FILE... [--sar-resampling] for the runtime."""
    args: List[str] = ["--spectral", alg.raster_path(parameters, "SPECTRAL", context),
                       *alg.raster_paths(parameters, "SPECTRAL_EXTRA", context),
                       "--sar", alg.raster_path(parameters, "SAR", context),
                       *alg.raster_paths(parameters, "SAR_EXTRA", context)]
    if alg.parameterDefinition("SAR_RESAMPLING") is not None:
        choice = (SAR_RESAMPLING[alg.parameterAsEnum(parameters, "SAR_RESAMPLING", context)]
                  if parameters.get("SAR_RESAMPLING") not in (None, "") else "auto")
        if choice != "auto":  # the runtime's default
            args += ["--sar-resampling", choice]
    return args


def add_ground_truth(alg: BdgfAlgorithm, label_raster: bool = True) -> None:
    """GROUND_TRUTH (vector features) with CLASS_FIELD and CLASS_NAME_FIELD, and LABEL_RASTER.

    Polygons and label rasters are two parameters: a field parameter hanging off a layer parameter
    that also takes rasters crashes QGIS 3.22's dialog when the project's first layer is a raster
    (QgsProcessingFieldWidgetWrapper::setParentLayerWrapperValue)."""
    alg.add(QgsProcessingParameterFeatureSource("GROUND_TRUTH", "Ground truth (labelled polygons or points)",
                                                types=[QgsProcessing.TypeVectorAnyGeometry], optional=label_raster),
            "Labelled polygons (or points), any OGR source, with a class code or class name per feature; "
            "'Selected features only' uses the selection. Memory, filtered or database layers are "
            "exported to a temporary GeoPackage first." +
            (" Leave empty when the labels come from a label raster (LABEL_RASTER)." if label_raster else ""))
    # Optional only because QGIS 3.22 rejects a missing field value even when it has a default;
    # left empty, the field 'class' is used.
    alg.add(QgsProcessingParameterField("CLASS_FIELD", "Class field", defaultValue="class",
                                        parentLayerParameterName="GROUND_TRUTH",
                                        type=QgsProcessingParameterField.Any, optional=True),
            "Field of the ground truth holding the classes: integer codes, or text names (each distinct "
            "name becomes a class, named in the legend); default 'class', also used when left empty.")
    alg.add(QgsProcessingParameterField("CLASS_NAME_FIELD", "Class name field (optional)",
                                        parentLayerParameterName="GROUND_TRUTH",
                                        type=QgsProcessingParameterField.Any, optional=True),
            "Optional field with the name of each class code (e.g. SCP's MC_info beside MC_ID): the names "
            "label the legend and the reports. A code with two different names is refused.")
    if label_raster:
        alg.add(QgsProcessingParameterRasterLayer("LABEL_RASTER", "... or a label raster", optional=True),
                "Instead of polygons: a raster of class codes on the image's grid (e.g. the train labels of "
                "'Import paper scene (.mat)'). Every value is a class except the unlabelled value.")
        alg.add(QgsProcessingParameterNumber("UNLABELLED_VALUE", "Unlabelled value of the label raster",
                                             QgsProcessingParameterNumber.Integer, optional=True),
                "The value of the label raster's unlabelled pixels; empty: the raster's nodata value when it "
                "has one, else 0. Every other value, 0 and negatives included, is a class.", advanced=True)


def check_ground_truth(alg: BdgfAlgorithm, parameters, context) -> Optional[str]:
    """A message when neither or both of GROUND_TRUTH and LABEL_RASTER are given."""
    if alg.parameterDefinition("LABEL_RASTER") is None:
        return None
    polygons = bool(parameters.get("GROUND_TRUTH"))
    raster = bool(parameters.get("LABEL_RASTER"))
    if polygons and raster and not _is_raster_file(parameters.get("GROUND_TRUTH")):
        return ("Give either ground-truth polygons (GROUND_TRUTH) or a label raster (LABEL_RASTER), not both: "
                "clear one of the two.")
    if not polygons and not raster:
        return ("No ground truth: give labelled polygons (GROUND_TRUTH, with their CLASS_FIELD) or a label "
                "raster (LABEL_RASTER).")
    return None


def _is_raster_file(value: Any) -> bool:
    """True for a path GDAL opens as a raster: GROUND_TRUTH=labels.tif from before LABEL_RASTER existed."""
    if not isinstance(value, str) or not value or not os.path.isfile(value.split("|")[0]):
        return False
    return gdal_opens(value.split("|")[0], raster=True)


def gdal_opens(path: str, raster: bool) -> bool:
    """True when GDAL opens ``path`` as a raster (or a vector); read-only, nothing written beside it."""
    from osgeo import gdal

    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        ds = gdal.OpenEx(path, (gdal.OF_RASTER if raster else gdal.OF_VECTOR) | gdal.OF_READONLY)
        ok = ds is not None
        ds = None
        return ok
    except RuntimeError:
        return False
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)


def ground_truth_args(alg: BdgfAlgorithm, parameters, context, feedback) -> List[str]:
    """--groundtruth [--layer] --class-field [--class-name-field] [--unlabelled-value] for the runtime."""
    field = alg.field_name(parameters, "CLASS_FIELD", context)
    raster_value = parameters.get("LABEL_RASTER")
    legacy = parameters.get("GROUND_TRUTH") if _is_raster_file(parameters.get("GROUND_TRUTH")) else None
    if raster_value or legacy:
        if raster_value:
            path = alg.raster_path(parameters, "LABEL_RASTER", context)
        else:
            path = absolute(legacy.split("|")[0])
            feedback.pushInfo(f"GROUND_TRUTH is a raster ({path}): read as a label raster (LABEL_RASTER).")
        args = ["--groundtruth", path, "--class-field", field]
        if parameters.get("UNLABELLED_VALUE") not in (None, ""):
            args += ["--unlabelled-value", alg.parameterAsInt(parameters, "UNLABELLED_VALUE", context)]
        return args
    path, layer_name = alg.feature_source_path(parameters, "GROUND_TRUTH", context, feedback, field)
    args = ["--groundtruth", path]
    if layer_name:
        args += ["--layer", layer_name]
    args += ["--class-field", field]
    names = alg.field_name(parameters, "CLASS_NAME_FIELD", context, default="")
    if names:
        args += ["--class-name-field", names]
    colours = style_colours(parameters.get("GROUND_TRUTH"), field, context)
    if colours:
        feedback.pushInfo(f"Class colours from the ground truth's categorized style: {len(colours)} classes.")
        args += ["--class-colors", json.dumps(colours)]
    return args


def style_colours(value: Any, field: str, context) -> Dict[str, str]:
    """{code or name: '#rrggbb'} from a project layer's categorized style on ``field`` (else {})."""
    if isinstance(value, QgsProcessingFeatureSourceDefinition):
        value = value.source.staticValue()
    if isinstance(value, QgsVectorLayer):
        layer = value
    elif isinstance(value, str) and value:
        layer = QgsProcessingUtils.mapLayerFromString(value, context, False)
    else:
        return {}
    renderer = layer.renderer() if isinstance(layer, QgsVectorLayer) else None
    if not isinstance(renderer, QgsCategorizedSymbolRenderer) or renderer.classAttribute() != field:
        return {}
    out = {}
    for category in renderer.categories():
        value = category.value()
        if value in (None, "") or category.symbol() is None:
            continue
        key = str(int(value)) if isinstance(value, float) and float(value).is_integer() else str(value)
        out[key] = category.symbol().color().name()
    return out


def add_sampling(alg: BdgfAlgorithm, validation_default: float, block_size: bool) -> None:
    alg.add(QgsProcessingParameterNumber("SAMPLES_PER_CLASS", "Training samples per class",
                                         QgsProcessingParameterNumber.Integer, 50, minValue=1, maxValue=1000000),
            "Labelled pixels drawn per class for training, from the training side of the split only, 1 "
            "to 1000000; default 50 (the paper's few-label setting). The test pixels are held out. With "
            "a test ground truth they are drawn from the ground truth; give a large number to use all of it.")
    alg.add(QgsProcessingParameterEnum("SPLIT", "Train/test split", options=list(SPLITS), defaultValue=0),
            SPLIT_HELP)
    alg.add(QgsProcessingParameterMapLayer("TEST_GROUND_TRUTH", "Test ground truth (fixed test set)",
                                           optional=True, types=GROUND_TRUTH_TYPES),
            "Optional separate test set: labelled polygons (same class field) or a label raster on the "
            "image's grid. When given, the ground truth is used whole for training and validation and "
            "this layer alone for the held-out accuracy (e.g. the official train/test split of a scene "
            "from 'Import paper scene (.mat)').")
    if block_size:
        alg.add(QgsProcessingParameterNumber("BLOCK_SIZE", "Block size of the block split (pixels)",
                                             QgsProcessingParameterNumber.Integer, 32, minValue=1, maxValue=100000),
                "Side of the square blocks of the 'blocks' split, in pixels; default 32. Ignored by the "
                "other splits.", advanced=True)
    alg.add(QgsProcessingParameterNumber("VALIDATION_SHARE", "Validation share",
                                         QgsProcessingParameterNumber.Double, validation_default,
                                         minValue=0.0, maxValue=0.9),
            f"Share of each class's training-side pixels set apart to choose the best epoch: square blocks "
            f"cut out of the training polygons (never a whole polygon, so a dominant region keeps training "
            f"pixels), whole blocks under the block split, random pixels under the pixel split; the test "
            f"pixels do not depend on it. 0 to 0.9; default {validation_default:g}.", advanced=True)


def check_validation_share(alg: BdgfAlgorithm, parameters, context):
    if parameters.get("VALIDATION_SHARE") is None:
        return None
    share = alg.parameterAsDouble(parameters, "VALIDATION_SHARE", context)
    if not 0.0 <= share < 1.0:
        return f"Validation share (VALIDATION_SHARE) must be in 0..0.9, got {share:g}."
    return None


def sampling_args(alg: BdgfAlgorithm, parameters, context, feedback, features: bool = False) -> list:
    """--spectral/--sar[/--features]/--groundtruth[/--test-groundtruth]/--class-field/--samples-per-class/--split/
    --validation-share."""
    field = alg.field_name(parameters, "CLASS_FIELD", context)
    args = input_args(alg, parameters, context)
    features_path = alg.raster_path(parameters, "FEATURES", context, optional=True) if features else None
    if features_path:
        args += ["--features", features_path]
    args += ground_truth_args(alg, parameters, context, feedback)
    test = alg.ground_truth_path(parameters, "TEST_GROUND_TRUTH", context, feedback, field, optional=True)
    if test:
        args += ["--test-groundtruth", test]
    args += ["--samples-per-class", alg.parameterAsInt(parameters, "SAMPLES_PER_CLASS", context),
             "--split", alg.split(parameters, context),
             "--validation-share", repr(float(alg.parameterAsDouble(parameters, "VALIDATION_SHARE", context)))]
    return args
