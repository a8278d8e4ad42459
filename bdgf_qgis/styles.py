"""How outputs look once Processing loads them into the project: class maps with their legend,
confidence and entropy with a colour ramp, ground truth by class as outlines over the image.

Processing loads outputs without their default style (the .qml written beside a map is not read),
so each output gets a post-processor that applies its style. QGIS keeps only a pointer to a
post-processor: they are kept alive here until the layer is styled.
"""
from __future__ import annotations

import os
from typing import Optional, Set

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsLineSymbol,
    QgsMarkerSymbol,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

_ALIVE: Set[QgsProcessingLayerPostProcessorInterface] = set()
#: colours for classes without one (ColorBrewer Paired)
PALETTE = ("#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a",
           "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99")


class _Style(QgsProcessingLayerPostProcessorInterface):
    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        try:
            self.apply(layer)
            layer.triggerRepaint()
        finally:
            _ALIVE.discard(self)

    def apply(self, layer) -> None:
        raise NotImplementedError


class ClassMapStyle(_Style):
    """The .qml the runtime wrote beside the map: class names and colours, no stray entries."""

    def __init__(self, qml: str) -> None:
        super().__init__()
        self.qml = qml

    def apply(self, layer) -> None:
        if isinstance(layer, QgsRasterLayer) and os.path.isfile(self.qml):
            layer.loadNamedStyle(self.qml)


class RampStyle(_Style):
    """A continuous colour ramp from ``low`` to ``high`` (confidence 0..1; entropy from 0 to the
    layer's maximum when ``high`` is None)."""

    def __init__(self, ramp: str, low: float, high: Optional[float] = None, invert: bool = False) -> None:
        super().__init__()
        self.ramp, self.low, self.high, self.invert = ramp, low, high, invert

    def apply(self, layer) -> None:
        if not isinstance(layer, QgsRasterLayer):
            return
        if self.high is None:
            top = layer.dataProvider().bandStatistics(1).maximumValue
            self.high = float(top) if top == top and top > self.low else self.low + 1.0
        ramp = QgsStyle.defaultStyle().colorRamp(self.ramp) or QgsGradientColorRamp(QColor("#440154"),
                                                                                   QColor("#fde725"))
        if self.invert:
            ramp.invert()
        shader_fn = QgsColorRampShader(self.low, self.high, ramp, QgsColorRampShader.Interpolated)
        shader_fn.classifyColorRamp(8, -1)
        shader = QgsRasterShader()
        shader.setRasterShaderFunction(shader_fn)
        renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
        renderer.setClassificationMin(self.low)
        renderer.setClassificationMax(self.high)
        layer.setRenderer(renderer)


class GroundTruthStyle(_Style):
    """Each class in its colour (the layer's ``color`` field when it has one), polygons as outlines
    only, so the image or the map stays visible under them."""

    def __init__(self, class_field: str) -> None:
        super().__init__()
        self.class_field = class_field

    def apply(self, layer) -> None:
        if not isinstance(layer, QgsVectorLayer) or layer.fields().indexOf(self.class_field) < 0:
            return
        has_colour = layer.fields().indexOf("color") >= 0
        has_name = layer.fields().indexOf("name") >= 0
        seen = {}
        for feature in layer.getFeatures():
            value = feature[self.class_field]
            if value not in seen:
                seen[value] = (feature["color"] if has_colour else None, feature["name"] if has_name else None)
        categories = []
        for i, value in enumerate(sorted(seen, key=lambda v: (str(type(v)), v))):
            colour, name = seen[value]
            colour = QColor(colour) if colour and QColor(colour).isValid() else QColor(PALETTE[i % len(PALETTE)])
            categories.append(QgsRendererCategory(value, self._symbol(layer, colour), str(name or value)))
        layer.setRenderer(QgsCategorizedSymbolRenderer(self.class_field, categories))

    @staticmethod
    def _symbol(layer, colour: QColor):
        name = colour.name()
        kind = layer.geometryType()
        if kind == QgsWkbTypes.PolygonGeometry:
            return QgsFillSymbol.createSimple({"style": "no", "outline_color": name, "outline_width": "0.6"})
        if kind == QgsWkbTypes.LineGeometry:
            return QgsLineSymbol.createSimple({"line_color": name, "line_width": "0.6"})
        return QgsMarkerSymbol.createSimple({"color": name, "outline_color": "black", "size": "2"})


def forget_pending() -> None:
    """Release the styles of outputs that were never loaded (processing.run, qgis_process): the provider
    does it on unload, so no Python wrapper of a QGIS object outlives QGIS."""
    _ALIVE.clear()


def style_on_load(context: QgsProcessingContext, path: Optional[str], style: _Style) -> bool:
    """Give ``style`` to the output ``path`` if Processing loads it into the project."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return False
    _ALIVE.add(style)
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(style)
    return True


def load_on_completion(context: QgsProcessingContext, path: Optional[str], name: str, output: str,
                       style: Optional[_Style] = None) -> None:
    """Add a file the algorithm wrote (not a destination parameter) to the project when it is done."""
    if not path or context.project() is None:
        return
    details = QgsProcessingContext.LayerDetails(name, context.project(), output)
    context.addLayerToLoadOnCompletion(path, details)
    if style is not None:
        style_on_load(context, path, style)
