"""Streaming classification: read blocks of rows (with the patch halo), predict, write the map.

Peak memory is bounded by the memory budget, not the scene size: the budget pays for the
predictor's batch (measured, see ``BDGFPredictor.plan``), GDAL's block cache (capped for the
run), the diffusion network's tile when features are computed on the fly, and then as many rows
per block as fit. The next block is read in a background thread while the current one is
predicted (GDAL releases the GIL while reading).

Diffusion features can come from a raster (``Inputs.features``) or be computed inside the run from
the spectral and SAR rows (``Inputs.diffusion``, :class:`DiffusionFeatures`): the reader then reads
the rows with the diffusion network's halo as well, and the features of a block are computed
tile by tile exactly as ``Pretrain DDPM`` computes its feature raster (same noise on the same
global grid, same reflect padding at the image borders), so one call goes from rasters to map.
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
#: Share of the memory budget given to GDAL's block cache during the run (at least 2 MB).
GDAL_CACHE_SHARE = 1 / 16
#: What a run holds whatever its blocks, measured here (docs/bench/classify.md): GDAL's datasets
#: and output writers, the reader thread's allocator arena, first-use allocations.
RUNTIME_RESERVE_MB = 12


class Predictor(Protocol):
    halo: int
    codes: list[int]

    def predict_block(self, spectral: np.ndarray, sar: np.ndarray,
                      features: np.ndarray | None) -> np.ndarray: ...


class DiffusionFeatures:
    """Diffusion features of row ranges of a scene, computed from its raw spectral and SAR rows.

    ``rows(a, b, spectral, sar, first)`` gets raw rows [first, first + n) of the scene that cover
    [a - halo, b + halo) (clipped to the image) and returns the features (F, b - a, W). Tiles of
    ``config.tile`` pixels go through the U-Net ``config.extract_batch`` at a time, as in
    ``extract_features``. The rows of the previous call that the next one needs again (the patch
    halo between two blocks) are kept rather than recomputed.
    """

    def __init__(self, model, height: int, width: int, device: str = "cpu") -> None:
        from .diffusion import features as _df

        cfg = model.config
        if model.projection is None and cfg.feature_channels > 0:
            raise BdgfError("the diffusion model has no fitted feature projection, so its features would not be the "
                            "ones the classifier was trained on; give the model file written by 'Pretrain DDPM'")
        self.model, self.height, self.width, self.device = model, height, width, device
        self.halo = _df._prepare(model, None, device)
        self.bands = int(model.output_channels)
        self.tile = int(cfg.tile)
        self.group = max(1, int(getattr(cfg, "extract_batch", 1)))
        self._cache: tuple[int, int, np.ndarray] | None = None

    def working_bytes(self) -> int:
        """Host memory of one U-Net pass over ``group`` tiles with their halo, measured on a small window
        (every layer's output counted as if alive at once, see :mod:`bdgf_core.memprobe`)."""
        import torch

        from .memprobe import module_output_bytes

        n, cfg = 16, self.model.config
        x = torch.zeros(1, 1, self.model.n_padded, n, n, device=self.device)
        t = torch.full((1,), int(cfg.timesteps[0]), dtype=torch.long, device=self.device)
        with torch.no_grad():
            per_px = module_output_bytes(lambda: self.model.net.decoder_features(x, t, max(cfg.layers) + 1)) / n ** 2
        window = (self.tile + 2 * self.halo) ** 2 * self.group
        # the window's inputs (noised copies) and the raw features kept for each timestep
        per_px += 4 * (3 * self.model.n_padded + len(cfg.timesteps) * self.model.raw_feature_channels)
        return int(per_px * window)

    def rows(self, a: int, b: int, spectral: np.ndarray, sar: np.ndarray, first: int) -> np.ndarray:
        from .diffusion import features as _df

        out = np.empty((self.bands, b - a, self.width), np.float32)
        start = a
        if self._cache is not None:
            ca, cb, cached = self._cache
            if ca <= a < cb:
                keep = min(cb, b) - a
                out[:, :keep] = cached[:, a - ca:a - ca + keep]
                start = a + keep
        n = spectral.shape[1]

        def read_window(r0: int, r1: int, c0: int, c1: int):
            if r0 < first or r1 > first + n:
                raise BdgfError(f"internal: diffusion rows {r0}-{r1} requested, {first}-{first + n} read")
            return spectral[:, r0 - first:r1 - first, c0:c1], sar[:, r0 - first:r1 - first, c0:c1]

        tiles = [(r, min(r + self.tile, b), c, min(c + self.tile, self.width))
                 for r in range(start, b, self.tile) for c in range(0, self.width, self.tile)]
        # groups of tiles of one shape: a group's windows are grown to its largest tile, which
        # would read rows past the ones at hand
        groups: dict[tuple[int, int], list] = {}
        for t in tiles:
            groups.setdefault((t[1] - t[0], t[3] - t[2]), []).append(t)
        batches = [g[i:i + self.group] for g in groups.values() for i in range(0, len(g), self.group)]
        for group in batches:
            raws = _df._tiles_raw_features(self.model, read_window, self.height, self.width, group, self.halo,
                                           self.device)
            for (r0, r1, c0, c1), raw in zip(group, raws):
                out[:, r0 - a:r1 - a, c0:c1] = _df._project(self.model, raw).cpu().numpy()
        self._cache = (a, b, out)
        return out


@dataclass
class Inputs:
    spectral: RasterSource
    sar: RasterSource
    features: RasterSource | None = None
    diffusion: DiffusionFeatures | None = None

    def sources(self) -> list[RasterSource]:
        return [s for s in (self.spectral, self.sar, self.features) if s is not None]

    @property
    def channels(self) -> int:
        return sum(s.bands for s in self.sources()) + (self.diffusion.bands if self.diffusion else 0)


def rows_per_block(inputs: Inputs, memory_mb: float, halo: int, bytes_per_pixel_extra: int = 0,
                   fixed_bytes: float = 0) -> int:
    """How many rows fit the budget once ``fixed_bytes`` (batch, caches) are paid for.

    Per pixel of a block: the inputs six times (read, padded, normalised, the next block in flight),
    the per-pixel outputs and the predictor's per-pixel temporaries (256 bytes, more with
    ``bytes_per_pixel_extra``); per block: the patch halo rows, and with diffusion
    features the raw spectral and SAR rows of the diffusion network's halo.
    """
    w = inputs.spectral.width
    per_px = inputs.channels * 4 * 3 * 2 + 256 + bytes_per_pixel_extra
    avail = memory_mb * 2**20 - fixed_bytes
    if inputs.diffusion is not None:
        avail -= 2 * inputs.diffusion.halo * w * (inputs.spectral.bands + inputs.sar.bands) * 4 * 2
    rows = int(avail // max(w * per_px, 1)) - 2 * halo
    return max(1, min(rows, inputs.spectral.height))


@dataclass
class _Block:
    arrays: list[np.ndarray]  # spectral, sar[, features] with the halo
    raw: tuple[np.ndarray, np.ndarray, int] | None  # diffusion: raw spectral and SAR rows, their first row
    rows: tuple[int, int]  # image rows [a, b) the arrays hold before padding


def _pad(x: np.ndarray, r0: int, r1: int, a: int, b: int, halo: int, mode: str) -> np.ndarray:
    if not halo:
        return x
    return np.pad(x, ((0, 0), (halo - (r0 - a), halo - (b - r1)), (halo, halo)), mode=mode)


def read_rows(src: RasterSource, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of all bands as (C, b - a, W) float32, nodata and non-finite values as NaN.

    What ``RasterSource.read`` returns, read with one dataset-level call instead of band by band:
    a pixel-interleaved GeoTIFF (as GDAL writes multi-band files by default) stores all bands of
    a pixel together, so a band-by-band read decodes each tile once per band unless GDAL's cache
    holds a whole row of tiles of every band (here: 2.5x slower and twice the memory on the
    60-band demo scene).
    """
    out = np.empty((src.bands, b - a, src.width), np.float32)
    src.ds.ReadAsArray(0, a, src.width, b - a, buf_obj=out)
    for k, nd in enumerate(src.nodata):
        if nd is not None:
            out[k][out[k] == np.float32(nd)] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def _read(inputs: Inputs, r0: int, r1: int, halo: int) -> _Block:
    h, w = inputs.spectral.height, inputs.spectral.width
    a, b = max(0, r0 - halo), min(h, r1 + halo)
    # the block holds the image's first (last) rows whenever it needs padding at the top (bottom),
    # so padding the block reflects exactly the rows that padding the whole image would
    mode = "reflect" if min(h, w) > halo else "symmetric"
    raw = None
    if inputs.diffusion is not None:
        dh = inputs.diffusion.halo
        ra, rb = max(0, a - dh), min(h, b + dh)
        spe, sar = read_rows(inputs.spectral, ra, rb), read_rows(inputs.sar, ra, rb)
        raw = (spe, sar, ra)
        arrays = [_pad(spe[:, a - ra:b - ra], r0, r1, a, b, halo, mode), _pad(sar[:, a - ra:b - ra], r0, r1, a, b, halo, mode)]
        if inputs.features is not None:
            arrays.append(_pad(read_rows(inputs.features, a, b), r0, r1, a, b, halo, mode))
    else:
        arrays = [_pad(read_rows(src, a, b), r0, r1, a, b, halo, mode) for src in inputs.sources()]
    return _Block(arrays, raw, (a, b))


def read_block(inputs: Inputs, r0: int, r1: int, halo: int) -> tuple[np.ndarray, ...]:
    """Rows [r0 - halo, r1 + halo) of each input raster, reflect-padded at the image borders, so that
    the result equals the same window of the whole image padded by ``patches.pad_reflect``."""
    return tuple(_read(inputs, r0, r1, halo).arrays)


@contextlib.contextmanager
def _gdal_cache(max_bytes: int):
    """Cap GDAL's block cache (default: 5% of the RAM) for the run; restore it after."""
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(int(min(before, max_bytes)))
    try:
        yield
    finally:
        gdal.SetCacheMax(before)


def classify(predictor: Predictor, inputs: Inputs, out_map: str | os.PathLike, classes: Sequence[ClassInfo],
             confidence: str | os.PathLike | None = None, entropy: str | os.PathLike | None = None,
             memory_mb: float = 1024, reporter: Reporter | None = None) -> dict:
    """Classify the scene block by block; write the map (and optional rasters) atomically."""
    rep = reporter or Reporter()
    if memory_mb < 16:
        raise BdgfError(f"the memory budget must be at least 16 MB, got {memory_mb}")
    grid = inputs.spectral.grid
    halo = predictor.halo
    budget = memory_mb * 2**20
    cache = max(2 * 2**20, int(GDAL_CACHE_SHARE * budget))
    work = inputs.diffusion.working_bytes() if inputs.diffusion is not None else 0
    plan = getattr(predictor, "plan", None)
    if plan is not None:
        work += plan(budget - cache - work)
    fixed = RUNTIME_RESERVE_MB * 2**20 + cache + work
    if fixed > budget:
        need = int(fixed / 2**20) + 8
        raise BdgfError(f"a memory budget of {memory_mb:.0f} MB is too small for this model: the run's fixed part "
                        f"(model, batch, diffusion network, caches) alone needs {fixed / 2**20:.0f} MB; give at least "
                        f"{need} MB")
    block_rows = rows_per_block(inputs, memory_mb, halo, bytes_per_pixel_extra=16 * len(predictor.codes),
                                fixed_bytes=fixed)
    codes = np.asarray(predictor.codes, np.int32)
    by_code = {c.code: c for c in classes}
    batch = getattr(predictor, "batch_size", None)
    rep.info(f"classifying {grid.width} x {grid.height} pixels in blocks of {block_rows} rows "
             f"(memory budget {memory_mb:.0f} MB" + (f", batches of {batch} pixels" if batch else "") + ")")
    dtype = smallest_int_type(int(codes.max()))
    extras = [(p, name) for p, name in ((confidence, "confidence"), (entropy, "entropy")) if p is not None]
    with _gdal_cache(cache), _open_outputs(out_map, grid, dtype, extras) as writers:
        map_writer = writers[0]
        map_writer.set_categories([int(c) for c in codes], [by_code[int(c)].name if int(c) in by_code else f"class {c}" for c in codes],
                                  [by_code[int(c)].color if int(c) in by_code else "#808080" for c in codes])
        starts = list(range(0, grid.height, block_rows))
        with cf.ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(_read, inputs, starts[0], min(starts[0] + block_rows, grid.height), halo)
            for k, r0 in enumerate(starts):
                r1 = min(r0 + block_rows, grid.height)
                block = nxt.result()
                if k + 1 < len(starts):
                    s1 = starts[k + 1]
                    nxt = pool.submit(_read, inputs, s1, min(s1 + block_rows, grid.height), halo)
                rep.check_cancelled()
                arrays = list(block.arrays)
                if block.raw is not None:
                    a, b = block.rows
                    feats = inputs.diffusion.rows(a, b, *block.raw)
                    block.raw = None
                    mode = "reflect" if min(grid.height, grid.width) > halo else "symmetric"
                    arrays.append(_pad(feats, r0, r1, a, b, halo, mode))
                    del feats
                del block
                spec, sar = arrays[0], arrays[1]
                feats = arrays[2] if len(arrays) > 2 else None
                probs = predictor.predict_block(spec, sar, feats)          # (C, h, w)
                valid = np.ones(probs.shape[1:], bool)
                for x in arrays:
                    inner = x[:, halo:x.shape[1] - halo, halo:x.shape[2] - halo] if halo else x
                    valid &= np.isfinite(inner).all(0)
                del arrays, spec, sar, feats
                best = probs.argmax(0)
                map_writer.write(r0, 0, np.where(valid, codes[best], MAP_NODATA).astype(np.int32))
                del best
                wi = 1
                if confidence is not None:
                    writers[wi].write(r0, 0, np.where(valid, probs.max(0), np.nan).astype(np.float32))
                    wi += 1
                if entropy is not None:
                    writers[wi].write(r0, 0, np.where(valid, _entropy(probs), np.nan).astype(np.float32))
                del probs
                rep.progress(r1 / grid.height, f"rows {r1}/{grid.height}")
    style = write_qml(Path(out_map).with_suffix(".qml"), [by_code.get(int(c), ClassInfo(int(c), f"class {c}", "#808080")) for c in codes])
    return {"map": str(out_map), "confidence": str(confidence) if confidence else None,
            "entropy": str(entropy) if entropy else None, "style": str(style)}


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of (C, h, w) probabilities, 0 log 0 = 0."""
    out = np.zeros(probs.shape[1:], np.float32)
    for p in probs:  # one class at a time: no (C, h, w) temporaries
        with np.errstate(divide="ignore", invalid="ignore"):
            out -= np.where(p > 0, p * np.log(p), 0.0).astype(np.float32)
    return out


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
