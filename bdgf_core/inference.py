"""Streaming classification: read blocks of rows (with the patch halo), predict, write the map.

Peak memory is bounded by the memory budget, not the scene size. The next block is read in a
background thread while the current one is predicted (GDAL releases the GIL while reading).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .atomic import atomic_output
from .errors import BdgfError
from .groundtruth import ClassInfo
from .progress import Reporter
from .raster import RasterSource, create_raster, smallest_int_type

from osgeo import gdal

MAP_NODATA = 0


class Predictor(Protocol):
    halo: int
    codes: list[int]

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray,
                      features: np.ndarray | None) -> np.ndarray: ...


@dataclass
class Inputs:
    spectral: RasterSource
    sar: RasterSource
    features: RasterSource | None = None

    def sources(self) -> list[RasterSource]:
        return [s for s in (self.spectral, self.sar, self.features) if s is not None]


def rows_per_block(inputs: Inputs, memory_mb: float, halo: int, bytes_per_pixel_extra: int = 0) -> int:
    """How many rows fit the budget: the inputs (read, padded, normalised copies), two blocks in
    flight (read-ahead), and the per-pixel outputs."""
    channels = sum(s.bands for s in inputs.sources())
    per_row = inputs.spectral.width * (channels * 4 * 3 * 2 + 64 + bytes_per_pixel_extra)
    rows = int(memory_mb * 2**20 // max(per_row, 1)) - 2 * halo
    return max(1, min(rows, inputs.spectral.height))


def read_block(inputs: Inputs, r0: int, r1: int, halo: int) -> tuple[np.ndarray, ...]:
    """Rows [r0 - halo, r1 + halo) of each input, reflect-padded at the image borders, so that
    the result equals the same window of the whole image padded by ``patches.pad_reflect``."""
    h, w = inputs.spectral.height, inputs.spectral.width
    a, b = max(0, r0 - halo), min(h, r1 + halo)
    # the block holds the image's first (last) rows whenever it needs padding at the top (bottom),
    # so padding the block reflects exactly the rows that padding the whole image would
    mode = "reflect" if min(h, w) > halo else "symmetric"
    out = []
    for src in inputs.sources():
        x = src.read(a, b)
        if halo:
            x = np.pad(x, ((0, 0), (halo - (r0 - a), halo - (b - r1)), (halo, halo)), mode=mode)
        out.append(x)
    return tuple(out)


def classify(predictor: Predictor, inputs: Inputs, out_map: str | os.PathLike, classes: Sequence[ClassInfo],
             confidence: str | os.PathLike | None = None, entropy: str | os.PathLike | None = None,
             memory_mb: float = 1024, reporter: Reporter | None = None) -> dict:
    """Classify the scene block by block; write the map (and optional rasters) atomically."""
    rep = reporter or Reporter()
    if memory_mb < 16:
        raise BdgfError(f"the memory budget must be at least 16 MB, got {memory_mb}")
    grid = inputs.spectral.grid
    halo = predictor.halo
    block_rows = rows_per_block(inputs, memory_mb, halo, bytes_per_pixel_extra=16 * len(predictor.codes))
    codes = np.asarray(predictor.codes, np.int32)
    by_code = {c.code: c for c in classes}
    rep.info(f"classifying {grid.width} x {grid.height} pixels in blocks of {block_rows} rows "
             f"(memory budget {memory_mb:.0f} MB)")
    dtype = smallest_int_type(int(codes.max()))
    extras = [(p, name) for p, name in ((confidence, "confidence"), (entropy, "entropy")) if p is not None]
    with _open_outputs(out_map, grid, dtype, extras) as writers:
        map_writer = writers[0]
        map_writer.set_categories([int(c) for c in codes], [by_code[int(c)].name if int(c) in by_code else f"class {c}" for c in codes],
                                  [by_code[int(c)].color if int(c) in by_code else "#808080" for c in codes])
        starts = list(range(0, grid.height, block_rows))
        with cf.ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(read_block, inputs, starts[0], min(starts[0] + block_rows, grid.height), halo)
            for k, r0 in enumerate(starts):
                r1 = min(r0 + block_rows, grid.height)
                blocks = nxt.result()
                if k + 1 < len(starts):
                    s1 = starts[k + 1]
                    nxt = pool.submit(read_block, inputs, s1, min(s1 + block_rows, grid.height), halo)
                rep.check_cancelled()
                spec, sar = blocks[0], blocks[1]
                feats = blocks[2] if len(blocks) > 2 else None
                probs = predictor.predict_block(spec, sar, feats)          # (C, h, w)
                valid = np.ones(probs.shape[1:], bool)
                for b in blocks:
                    inner = b[:, halo:b.shape[1] - halo, halo:b.shape[2] - halo] if halo else b
                    valid &= np.isfinite(inner).all(0)
                best = probs.argmax(0)
                cls = np.where(valid, codes[best], MAP_NODATA).astype(np.int32)
                map_writer.write(r0, 0, cls)
                wi = 1
                if confidence is not None:
                    writers[wi].write(r0, 0, np.where(valid, probs.max(0), np.nan).astype(np.float32))
                    wi += 1
                if entropy is not None:
                    p = np.clip(probs, 1e-12, 1.0)
                    ent = -(p * np.log(p)).sum(0)
                    writers[wi].write(r0, 0, np.where(valid, ent, np.nan).astype(np.float32))
                rep.progress(r1 / grid.height, f"rows {r1}/{grid.height}")
    style = write_qml(Path(out_map).with_suffix(".qml"), [by_code.get(int(c), ClassInfo(int(c), f"class {c}", "#808080")) for c in codes])
    return {"map": str(out_map), "confidence": str(confidence) if confidence else None,
            "entropy": str(entropy) if entropy else None, "style": str(style)}


@contextlib.contextmanager
def _open_outputs(out_map, grid, dtype, extras):
    """Open the map and the optional float rasters; each is renamed into place only on success."""
    with contextlib.ExitStack() as es:
        writers = [es.enter_context(create_raster(out_map, grid, 1, dtype, MAP_NODATA, ["class"]))]
        for path, name in extras:
            writers.append(es.enter_context(create_raster(path, grid, 1, gdal.GDT_Float32, float("nan"), [name])))
        yield writers


def write_qml(dest: Path, classes: Sequence[ClassInfo]) -> Path:
    """A paletted-renderer QML style, so QGIS draws the map with the class names and colours."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.code}" color="{c.color}" alpha="255" label="{_xml(c.name)}"/>'
        for c in classes)
    text = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""
    with atomic_output(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest


def _xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
