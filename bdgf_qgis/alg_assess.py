"""Assess accuracy: compare a class map with ground truth (overall and average accuracy, kappa)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputNumber,
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

    def processAlgorithm(self, parameters, context, feedback):
        report = self.output_path(parameters, self.REPORT, context)
        json_path = self.output_path(parameters, self.JSON, context)
        csv_path = self.output_path(parameters, self.CSV, context)
        args = ["--map", self.raster_path(parameters, self.MAP, context)]
        args += ground_truth_args(self, parameters, context, feedback)
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
        for key in ("oa", "aa", "kappa"):
            value = res.get(key)
            out[key.upper()] = float(value) if value is not None else None
        if out["OA"] is not None:
            feedback.pushInfo(f"OA {out['OA']:.2f}%, AA {out['AA'] or 0:.2f}%, kappa {out['KAPPA'] or 0:.2f}")
        return out
