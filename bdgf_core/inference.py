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
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .atomic import atomic_output
from .distributed import SINGLE, DistContext, broadcast_object, run_agreed, split_rows
from .errors import BdgfError
from .groundtruth import ClassInfo
from .progress import Reporter
from .raster import RasterSource, RasterWriter, class_map_encoding, create_raster, gdal_cache_cap

from osgeo import gdal

MAP_NODATA = 0
#: Share of the memory budget given to GDAL's block cache during the run (at least 2 MB).
GDAL_CACHE_SHARE = 1 / 16
#: What a run holds whatever its blocks, measured (tests/test_classify_scale.py, a forest on a
#: 1500 x 1500 VRT mosaic): GDAL's datasets with their tile decode buffers (one per reading thread),
#: the output writers' compression buffers, first-use allocations: 21-24 MB besides the GDAL
#: cache. With 12 (before) a 32 MB budget peaked at 38 MB and a 48 MB one at 48; with 24, at 33 and 39.
RUNTIME_RESERVE_MB = 24
#: The smallest budget accepted: the reserve, GDAL's 2 MB cache and a few rows.
MIN_BUDGET_MB = 32
#: Rows of a tile of the output GeoTIFFs (GDAL's default for TILED=YES): each output is written a
#: whole row of tiles at a time, so its buffer is paid for in the budget.
OUTPUT_TILE_ROWS = 256


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
    try:
        src.ds.ReadAsArray(0, a, src.width, b - a, buf_obj=out)
    except RuntimeError as exc:  # a damaged file, or a virtual raster whose source went missing
        detail = " ".join(str(exc).split())
        raise BdgfError(f"cannot read rows {a}-{b} of the {src.what} {src.path.name} ({detail}); check that the "
                        "file, and any file it refers to, is complete and readable") from None
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


def _fixed_part(predictor: Predictor, inputs: Inputs, memory_mb: float, output_bytes: int) -> tuple[int, int]:
    """(bytes a run holds whatever its blocks, GDAL cache bytes) within ``memory_mb``; plans the batch."""
    budget = memory_mb * 2**20
    cache = max(2 * 2**20, int(GDAL_CACHE_SHARE * budget))
    work = inputs.diffusion.working_bytes() if inputs.diffusion is not None else 0
    tiles = min(OUTPUT_TILE_ROWS, inputs.spectral.height) * inputs.spectral.width * output_bytes
    fixed = RUNTIME_RESERVE_MB * 2**20 + cache + work + tiles
    plan = getattr(predictor, "plan", None)
    if plan is not None:  # the predictor's share: what the rest leaves (its batch takes half of that)
        fixed += plan(budget - fixed)
    return int(fixed), cache


def plan_blocks(predictor: Predictor, inputs: Inputs, memory_mb: float, output_bytes: int = 9) -> tuple[int, int]:
    """(rows per block, GDAL cache bytes) of a run within ``memory_mb`` (per process under torchrun).

    ``output_bytes``: bytes per pixel of all the outputs (map, confidence, entropy), for the buffers
    of one row of output tiles.

    Sizes the predictor's batch as a side effect (``plan``). The batch's memory is measured in the
    process, so under torchrun rank 0's plan is given to every rank (see :func:`classify`).
    """
    if memory_mb < MIN_BUDGET_MB:
        raise BdgfError(f"the memory budget must be at least {MIN_BUDGET_MB} MB, got {memory_mb:g}")
    fixed, cache = _fixed_part(predictor, inputs, memory_mb, output_bytes)
    if fixed > memory_mb * 2**20:
        # the smallest budget that fits, with 8 MB for rows: budget - fixed grows with the budget
        # (the batch takes half of what is free, the cache 1/16), so bisect on it
        lo, hi = int(memory_mb), int(memory_mb) * 2 + 64
        while _fixed_part(predictor, inputs, hi, output_bytes)[0] + 8 * 2**20 > hi * 2**20:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _fixed_part(predictor, inputs, mid, output_bytes)[0] + 8 * 2**20 <= mid * 2**20 \
                else (mid, hi)
        _fixed_part(predictor, inputs, memory_mb, output_bytes)  # the predictor's batch back to this budget's
        raise BdgfError(f"a memory budget of {memory_mb:.0f} MB is too small for this model: the run's fixed part "
                        f"(model, batch, diffusion network, caches, output tiles) alone needs {fixed / 2**20:.0f} MB; "
                        f"give at least {hi} MB")
    block_rows = rows_per_block(inputs, memory_mb, predictor.halo, bytes_per_pixel_extra=16 * len(predictor.codes),
                                fixed_bytes=fixed)
    return block_rows, cache


def classify(predictor: Predictor, inputs: Inputs, out_map: str | os.PathLike, classes: Sequence[ClassInfo],
             confidence: str | os.PathLike | None = None, entropy: str | os.PathLike | None = None,
             memory_mb: float = 1024, reporter: Reporter | None = None, ctx: DistContext = SINGLE) -> dict:
    """Classify the scene block by block; write the map (and optional rasters) atomically.

    Under torchrun (``ctx`` from :func:`bdgf_core.distributed.context`) the blocks of rows a single
    process would make are shared out, contiguous runs of blocks per rank. Rank 0 writes its blocks
    into the outputs as a single process does; every other rank writes its rows raw into a private
    folder beside the map (``.<map name>.bdgf-parts-<id>``, on a file system all ranks see). Once
    every rank has finished, rank 0 copies those rows into the outputs, block after block in the
    single process's order, so the files are those of one process; it alone writes the outputs and
    the style, and removes the folder whatever happens. Every block ends with a collective status
    check (:func:`bdgf_core.distributed.run_agreed`): a rank's failure stops all ranks after the
    block at hand and rank 0 reports it; nothing is left behind. The memory budget is per process.
    Non-main ranks return ``{}``.
    """
    rep = reporter or Reporter()
    grid = inputs.spectral.grid
    halo = predictor.halo
    codes = np.asarray(predictor.codes, np.int32)
    dtype, nodata = class_map_encoding(codes.tolist())  # a class may be coded 0: then nodata is another value
    extras = [(p, name) for p, name in ((confidence, "confidence"), (entropy, "entropy")) if p is not None]
    types = [_numpy_type(dtype)] + [np.dtype(np.float32)] * len(extras)

    def plan() -> tuple[int, int, int | None]:
        rows, cache = plan_blocks(predictor, inputs, memory_mb, sum(t.itemsize for t in types))
        return rows, cache, getattr(predictor, "batch_size", None)

    # Rank 0's plan for all: the batch's memory is measured in each process and the measure can
    # differ a little, while every rank must cut the same blocks (and batches, for the same numbers).
    block_rows, cache, batch = broadcast_object(run_agreed(plan, ctx), ctx)
    if batch is not None:
        predictor.batch_size = batch
    blocks = [(r0, min(r0 + block_rows, grid.height)) for r0 in range(0, grid.height, block_rows)]
    shares = split_rows(len(blocks), ctx.world)  # contiguous runs of block indices, one per rank
    first, last = shares[ctx.rank]
    by_code = {c.code: c for c in classes}
    batch = getattr(predictor, "batch_size", None)
    rep.info(f"classifying {grid.width} x {grid.height} pixels in blocks of {block_rows} rows "
             f"(memory budget {memory_mb:.0f} MB" + (f", batches of {batch} pixels" if batch else "") + ")")
    if ctx.enabled:
        idle = sum(1 for a, b in shares if a == b)
        rep.info(f"{len(blocks)} blocks shared by {ctx.world} processes (memory budget per process)"
                 + (f"; {idle} of them have no block: lower the memory budget to give every process work"
                    if idle else ""))
    parts: Path | None = None
    try:
        if ctx.enabled:
            made = run_agreed(lambda: _make_parts_folder(out_map) if ctx.is_main else None, ctx)
            parts = Path(broadcast_object(str(made) if made else None, ctx))
        with contextlib.ExitStack() as stack:
            def open_sinks():
                stack.enter_context(gdal_cache_cap(cache))
                if ctx.is_main:
                    w = stack.enter_context(_open_outputs(out_map, grid, dtype, extras, nodata))
                    w[0].set_categories([int(c) for c in codes],
                                        [by_code[int(c)].name if int(c) in by_code else f"class {c}" for c in codes],
                                        [by_code[int(c)].color if int(c) in by_code else "#808080" for c in codes])
                    return [_TileRows(x, t) for x, t in zip(w, types)]
                if first == last:
                    return None
                w = _PartWriters(parts, ctx.rank, blocks[first][0], grid.width, types)
                stack.callback(w.close)
                return w

            writers = run_agreed(open_sinks, ctx)
            pool = stack.enter_context(cf.ThreadPoolExecutor(1))
            mine = blocks[first:last]
            steps = max(b - a for a, b in shares)  # every rank takes part in as many status checks
            nxt: cf.Future | None = None
            share = 0.95 if ctx.enabled else 1.0  # rank 0 copies the other ranks' rows after its own

            def step(k: int):
                nonlocal nxt
                if k < len(mine):
                    if k == 0:  # (the resumed rows are read here, before the reader thread starts)
                        if first > 0 and inputs.diffusion is not None:
                            _resume_diffusion(inputs, blocks, first, halo)
                        nxt = pool.submit(_read, inputs, *mine[0], halo)
                    r0, r1 = mine[k]
                    block = nxt.result()
                    if k + 1 < len(mine):
                        nxt = pool.submit(_read, inputs, *mine[k + 1], halo)
                    rep.check_cancelled()
                    out = _predict_block(predictor, inputs, block, r0, r1, halo, codes, confidence is not None,
                                         entropy is not None, nodata)
                    # GDAL is never used by two threads at once: the read of the next block ends before
                    # this one is written (a read that evicts another dataset's dirty tiles writes them
                    # from its thread: pixels were lost that way), which also fixes the order of GDAL's
                    # calls, and so the files' bytes
                    if k + 1 < len(mine):
                        cf.wait([nxt])
                    for i, a in enumerate(out):
                        writers[i].write(r0, 0, a)
                    del out
                    if ctx.enabled:
                        rep.progress(share * (k + 1) / len(mine), f"rows {r1}/{grid.height}")
                    else:
                        rep.progress(r1 / grid.height, f"rows {r1}/{grid.height}")
                if k == steps - 1 and not ctx.is_main and writers is not None:
                    writers.close()  # complete on disk before rank 0 hears that every rank is done

            for k in range(steps):
                run_agreed(lambda: step(k), ctx)
            if not ctx.is_main:
                return {}
            if ctx.enabled:
                rep.info(f"writing the rows of the other process{'es' if ctx.world > 2 else ''}")
                _copy_parts(parts, blocks, shares, grid.width, writers, types, rep, share)
    except BaseException:
        if parts is not None and not ctx.is_main:  # rank 0 may be gone: leave nothing of ours behind
            _remove_own_parts(parts, ctx.rank)
        raise
    finally:
        if parts is not None and ctx.is_main:
            shutil.rmtree(parts, ignore_errors=True)
    style = write_qml(Path(out_map).with_suffix(".qml"), [by_code.get(int(c), ClassInfo(int(c), f"class {c}", "#808080")) for c in codes])
    return {"map": str(out_map), "confidence": str(confidence) if confidence else None,
            "entropy": str(entropy) if entropy else None, "style": str(style)}


def _predict_block(predictor: Predictor, inputs: Inputs, block: _Block, r0: int, r1: int, halo: int,
                   codes: np.ndarray, confidence: bool, entropy: bool, nodata: int = MAP_NODATA) -> list[np.ndarray]:
    """The arrays written for rows [r0, r1): the map (int32), then confidence and entropy if asked."""
    grid = inputs.spectral.grid
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
    out = [np.where(valid, codes[best], nodata).astype(np.int32)]
    del best
    if confidence:
        out.append(np.where(valid, probs.max(0), np.nan).astype(np.float32))
    if entropy:
        out.append(np.where(valid, _entropy(probs), np.nan).astype(np.float32))
    return out


def _resume_diffusion(inputs: Inputs, blocks: Sequence[tuple[int, int]], k: int, halo: int) -> None:
    """Give ``inputs.diffusion`` the rows a run from block 0 would hold when it reaches block ``k``.

    A single run computes the features of block j's rows [b_{j-1}, b_j) (b_j: the block's last
    row plus the patch halo) tile by tile from b_{j-1}, and keeps the rows the next block needs
    again. A rank starting at block k computes the rows it shares with blocks before k in the same
    tiles (a tiling moves float rounding), so its features and map are those of one process.
    """
    h = inputs.spectral.height
    ends = [min(h, r1 + halo) for _, r1 in blocks]
    a_k = max(0, blocks[k][0] - halo)
    segments = [(ends[j - 1] if j else 0, ends[j]) for j in range(k) if ends[j] > a_k]
    if not segments:
        return
    dh = inputs.diffusion.halo
    out = []
    for s, e in segments:
        if e <= s:
            continue
        ra, rb = max(0, s - dh), min(h, e + dh)
        inputs.diffusion._cache = None  # tiles from s, as block j computed them
        out.append(inputs.diffusion.rows(s, e, read_rows(inputs.spectral, ra, rb), read_rows(inputs.sar, ra, rb), ra))
    inputs.diffusion._cache = (segments[0][0], segments[-1][1], np.concatenate(out, axis=1))


class _TileRows:
    """An output written one whole row of its tiles at a time, each tile once, then flushed.

    Blocks of rows arrive in order and rarely end on a tile boundary. Written as they come, a tile
    would be written (compressed, appended) again each time GDAL's cache evicts it half done, so
    the file grew and its layout followed the cache's pressure. A row of tiles written whole and
    flushed at once gives the same file whatever the blocks, the budget or the number of processes.
    """

    def __init__(self, writer: RasterWriter, dtype: np.dtype) -> None:
        self.writer = writer
        self.bands = [writer.ds.GetRasterBand(i + 1) for i in range(writer.ds.RasterCount)]
        self.height, self.width = writer.ds.RasterYSize, writer.ds.RasterXSize
        self.tile = self.bands[0].GetBlockSize()[1]
        self.buf = np.empty((min(self.tile, self.height), self.width), dtype)
        self.row0 = self.filled = 0  # the buffer holds rows [row0, row0 + filled)

    def write(self, row0: int, col0: int, block: np.ndarray) -> None:
        if row0 != self.row0 + self.filled or col0 != 0 or block.shape[-1] != self.width:
            raise BdgfError(f"internal: rows from {row0} written out of order")
        i = 0
        while i < block.shape[0]:
            n = min(block.shape[0] - i, len(self.buf) - self.filled)
            self.buf[self.filled:self.filled + n] = block[i:i + n]
            self.filled, i = self.filled + n, i + n
            if self.filled == min(self.tile, self.height - self.row0):
                self.writer.write(self.row0, 0, self.buf[:self.filled])
                for b in self.bands:
                    b.FlushCache()
                self.row0, self.filled = self.row0 + self.filled, 0


class _PartWriters:
    """A non-main rank's outputs: its rows [row0, ...) of each raster, raw, appended block after block."""

    def __init__(self, folder: Path, rank: int, row0: int, width: int, types: Sequence[np.dtype]) -> None:
        self.row0, self.width = row0, width
        self.types = list(types)
        self.files = [open(_part_path(folder, rank, i), "wb") for i in range(len(types))]

    def __getitem__(self, i: int) -> "_PartWriters._One":
        return self._One(self, i)

    class _One:
        def __init__(self, parent: "_PartWriters", i: int) -> None:
            self.parent, self.i = parent, i

        def write(self, row0: int, col0: int, block: np.ndarray) -> None:
            p = self.parent
            f = p.files[self.i]
            if f.tell() != (row0 - p.row0) * p.width * p.types[self.i].itemsize or col0 != 0:
                raise BdgfError(f"internal: rows from {row0} written out of order")
            f.write(np.ascontiguousarray(block, p.types[self.i]).tobytes())

    def close(self) -> None:
        for f in self.files:
            f.close()


def _part_path(folder: Path, rank: int, output: int) -> Path:
    return folder / f"rank{rank}-{output}.raw"


def _numpy_type(gdal_type: int) -> np.dtype:
    from osgeo import gdal_array

    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type))


def _make_parts_folder(out_map: str | os.PathLike) -> Path:
    dest = Path(out_map)
    folder = dest.with_name(f".{dest.name}.bdgf-parts-{uuid.uuid4().hex[:12]}")
    try:
        folder.mkdir()
    except OSError as exc:
        raise BdgfError(f"cannot create the folder {folder.name} for the processes' rows beside {dest.name} "
                        f"({exc.strerror}); choose an output path in a writable folder") from None
    return folder


def _copy_parts(folder: Path, blocks: Sequence[tuple[int, int]], shares: Sequence[tuple[int, int]], width: int,
                writers, types: Sequence[np.dtype], rep: Reporter, done: float) -> None:
    """Rank 0: write the other ranks' rows into the outputs, block by block in the single-process order.

    Reads with plain file reads, one block at a time: the copy holds one block of each output,
    never a mapping of a whole part file.
    """
    todo = sum(b - a for a, b in shares[1:])
    copied = 0
    for rank, (first, last) in enumerate(shares):
        if rank == 0 or first == last:
            continue
        row0 = blocks[first][0]
        files = [open(_part_path(folder, rank, i), "rb") for i in range(len(writers))]
        try:
            for r0, r1 in blocks[first:last]:
                for i, (f, t) in enumerate(zip(files, types)):
                    f.seek((r0 - row0) * width * t.itemsize)
                    a = np.fromfile(f, t, (r1 - r0) * width)
                    if a.size != (r1 - r0) * width:
                        raise BdgfError(f"internal: the rows of process {rank} are incomplete")
                    writers[i].write(r0, 0, a.reshape(r1 - r0, width))
                copied += 1
                rep.progress(done + (1 - done) * copied / todo)
        finally:
            for f in files:
                f.close()


def _remove_own_parts(folder: Path, rank: int) -> None:
    """A failed non-main rank removes its files, and the folder when rank 0 has already gone."""
    for p in folder.glob(f"rank{rank}-*.raw"):
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of (C, h, w) probabilities, 0 log 0 = 0."""
    out = np.zeros(probs.shape[1:], np.float32)
    for p in probs:  # one class at a time: no (C, h, w) temporaries
        with np.errstate(divide="ignore", invalid="ignore"):
            out -= np.where(p > 0, p * np.log(p), 0.0).astype(np.float32)
    return out


@contextlib.contextmanager
def _open_outputs(out_map, grid, dtype, extras, nodata: int = MAP_NODATA):
    """Open the map and the optional float rasters; each is renamed into place only on success."""
    with contextlib.ExitStack() as es:
        writers = [es.enter_context(create_raster(out_map, grid, 1, dtype, nodata, ["class"]))]
        for path, name in extras:
            writers.append(es.enter_context(create_raster(path, grid, 1, gdal.GDT_Float32, float("nan"), [name])))
        yield writers
        for w in writers:  # all complete on disk before the first rename: a full disk leaves none of them
            w.close()


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
