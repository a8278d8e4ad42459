"""Assess accuracy: compare a class map with ground truth (overall and average accuracy, kappa)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from .algorithm import REPORT_FILTER, BdgfAlgorithm, add_ground_truth, ground_truth_args, plain


class AssessAlgorithm(BdgfAlgorithm):
    NAME = "assess"
    DISPLAY_NAME = "Assess accuracy"
    GROUP = "Accuracy"
    GROUP_ID = "accuracy"
    INTRO = ("Compares a class map with ground truth (polygons, or a label raster such as the test labels "
             "of 'Import paper scene (.mat)') and writes a report with the confusion "
             "matrix, per-class accuracy, overall accuracy (OA), average accuracy (AA) and Cohen's "
             "kappa, all in percent.")

    MAP = "MAP"
    GROUND_TRUTH = "GROUND_TRUTH"
    CLASS_FIELD = "CLASS_FIELD"
    MODEL = "MODEL"
    REPORT = "REPORT"
    JSON = "JSON"
    CSV = "CSV"

    def initAlgorithm(self, config=None):
        self.add(QgsProcessingParameterRasterLayer(self.MAP, "Class map"),
                 "The class map to assess, e.g. the OUTPUT of 'Classify raster' (a GeoTIFF of class codes).")
        add_ground_truth(self)
        self.add(QgsProcessingParameterFile(self.MODEL, "Model file", extension="bdgf", optional=True),
                 "Optional .bdgf model that produced the map: the report then names its classes and "
                 "the split it was trained with, and leaves out its training pixels when the model "
                 "records them (held-out accuracy).")
        self.add(QgsProcessingParameterEnum("BOUNDARIES", "Boundary / interior breakdown", options=["auto", "on", "off"],
                                            defaultValue=0, optional=True),
                 "Accuracy apart on boundary pixels (within BOUNDARY_DISTANCE of a pixel of another class) and "
                 "interior pixels: 0 = auto (when the ground truth labels nearly every pixel, a full reference "
                 "map such as the demo scene's reference.tif), 1 = on, 2 = off. Held-out polygons stop short of "
                 "class edges, so only a full reference shows the errors along them.", advanced=True)
        self.add(QgsProcessingParameterNumber("BOUNDARY_DISTANCE", "Boundary distance (pixels)",
                                              QgsProcessingParameterNumber.Double, 2.0, minValue=0.5, maxValue=100,
                                              optional=True),
                 "Pixels this close (Euclidean, between pixel centres) to a pixel of another class are boundary "
                 "pixels; default 2.", advanced=True)
        self.add(QgsProcessingParameterFileDestination(self.REPORT, "Accuracy report", REPORT_FILTER),
                 "The HTML report to write.")
        self.add(QgsProcessingParameterFileDestination(self.JSON, "Metrics as JSON", "JSON (*.json)",
                                                       optional=True, createByDefault=False),
                 "Optional JSON file with every metric, for scripts.")
        self.add(QgsProcessingParameterFileDestination(self.CSV, "Confusion matrix as CSV", "CSV (*.csv)",
                                                       optional=True, createByDefault=False),
                 "Optional CSV file with the confusion matrix.")
        self.add_output_help(QgsProcessingOutputNumber("OA", "Overall accuracy (%)"),
                             "share of correctly classified test pixels, 0..100")
        self.add_output_help(QgsProcessingOutputNumber("AA", "Average accuracy (%)"),
                             "mean of the per-class accuracies, 0..100")
        self.add_output_help(QgsProcessingOutputNumber("KAPPA", "Kappa (%)"),
                             "Cohen's kappa times 100")
        for key, desc, text in (("OA_BOUNDARY", "OA on boundary pixels (%)", "OA over the boundary pixels, when "
                                 "the breakdown applies"), ("OA_INTERIOR", "OA on interior pixels (%)", "OA over "
                                 "the other labelled pixels"), ("BOUNDARY_PIXELS", "Boundary pixels", "their count"),
                                ("INTERIOR_PIXELS", "Interior pixels", "their count")):
            self.add_output_help(QgsProcessingOutputNumber(key, desc), text)

    def processAlgorithm(self, parameters, context, feedback):
        report = self.output_path(parameters, self.REPORT, context)
        json_path = self.output_path(parameters, self.JSON, context)
        csv_path = self.output_path(parameters, self.CSV, context)
        args = ["--map", self.raster_path(parameters, self.MAP, context)]
        args += ground_truth_args(self, parameters, context, feedback)
        if parameters.get("BOUNDARIES") not in (None, ""):
            args += ["--boundaries", ("auto", "on", "off")[self.parameterAsEnum(parameters, "BOUNDARIES", context)]]
        if parameters.get("BOUNDARY_DISTANCE") not in (None, ""):
            args += ["--boundary-distance", repr(self.parameterAsDouble(parameters, "BOUNDARY_DISTANCE", context))]
        model = self.file_path(parameters, self.MODEL, context)
        if model:
            args += ["--model", model]
        args += ["--report", report]
        if json_path:
            args += ["--json", json_path]
        if csv_path:
            args += ["--csv", csv_path]
        res = self.run_runtime("assess", args, feedback, outputs=[report, json_path, csv_path])
        out = {
            self.REPORT: plain(res.get("report", report)),
            self.JSON: plain(res.get("json", json_path)),
            self.CSV: plain(res.get("csv", csv_path)),
        }
        for key in ("oa", "aa", "kappa", "oa_boundary", "oa_interior", "boundary_pixels", "interior_pixels"):
            value = res.get(key)
            out[key.upper()] = float(value) if value is not None else None
        if out["OA"] is not None:
            feedback.pushInfo(f"OA {out['OA']:.2f}%, AA {out['AA'] or 0:.2f}%, kappa {out['KAPPA'] or 0:.2f}")
        if out["OA_BOUNDARY"] is not None:
            feedback.pushInfo(f"OA on boundary pixels {out['OA_BOUNDARY']:.2f}% ({int(out['BOUNDARY_PIXELS'])} "
                              f"pixels), on interior pixels {out['OA_INTERIOR']:.2f}%")
        return out
