"""Classify under torchrun (Gloo, 2 CPU processes): the files of one process, rank 0 alone writes,
a failing rank ends the job with its message and leaves nothing behind.

The scene is a 64 x 256 VRT mosaic of a generated 32 x 32 scene. Small budgets give blocks of a few
dozen rows, so each rank streams several blocks; the tests read the block size a run reports.
The BDGF model has random weights (the numbers, not the accuracy, are under test) and a patch of
3, so blocks read a halo of rows from the other rank's share.

A BDGF run's blocks depend on the batch memory the predictor measures, and that measure varies a
little from one process to another (``memprobe.module_output_bytes``), so two command-line runs
of a BDGF model may cut different blocks. The random-forest test compares two command-line runs;
the BDGF tests compare the two-process run with one process given the same blocks and batch.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from random_models import random_bdgf_file
from test_cli import run, scene_with_forest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_classify import mosaic_vrt  # noqa: E402

FOREST_BUDGET = 32  # MB per process, the smallest: blocks of 171 rows of the 64-wide forest mosaic
FOREST_HEIGHT = 1024  # 6 blocks, 3 per process
BUDGET = 72  # MB per process, BDGF with batches of 16 pixels (fixed part ~69 MB): blocks of 66 rows, 4 blocks
DIFFUSION_BUDGET = 84  # with batches of 256 and the diffusion network (fixed part ~81 MB): blocks of a few dozen rows
FEATURES = 4
OUTPUTS = {"conf.tif", "ent.tif", "map.qml", "map.tif", "map.tif.aux.xml"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from bdgf_core.raster import RasterSource, write_array

    d = tmp_path_factory.mktemp("ddp classify")
    s = scene_with_forest(d, size=32, bands=6, seed=5, samples=10, trees=5)
    for what in ("spectral", "sar"):
        mosaic_vrt(s[what], 8, 2, d / f"{what}.vrt")  # 64 wide, 256 tall
        mosaic_vrt(s[what], FOREST_HEIGHT // 32, 2, d / f"{what}_tall.vrt")
    grid = RasterSource(d / "spectral.vrt").grid
    feats = np.random.default_rng(0).normal(size=(FEATURES, grid.height, grid.width)).astype(np.float32)
    model = random_bdgf_file(d / "bdgf.bdgf", RasterSource(d / "spectral.vrt").bands, RasterSource(d / "sar.vrt").bands,
                             FEATURES, spectral_stats=(300.0, 50.0), sar_stats=(1.0, 1.0))
    return {"dir": d, "spectral": d / "spectral.vrt", "sar": d / "sar.vrt", "forest": d / "rf.bdgf",
            "tall": {"spectral": d / "spectral_tall.vrt", "sar": d / "sar_tall.vrt"},
            "model": model, "grid": grid, "feats": feats}


def block_shares(events, height=256, world=2):
    """The blocks of rows of each rank, from the block size the run reported."""
    from bdgf_core.distributed import split_rows

    msg = next(e["message"] for e in events if e.get("message", "").startswith("classifying "))
    rows = int(re.search(r"blocks of (\d+) rows", msg).group(1))
    blocks = [(r, min(r + rows, height)) for r in range(0, height, rows)]
    return rows, [blocks[a:b] for a, b in split_rows(len(blocks), world)]


def torchrun(args, nproc=2, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "bdgf_core", *map(str, args), "--progress", "json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return p, [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]


def files_of(d: Path) -> dict:
    """Every file and folder under ``d`` (hidden ones too), files with their bytes."""
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else None for p in sorted(d.rglob("*"))}


def same_files(one: Path, two: Path) -> None:
    """The outputs, byte for byte, and nothing else (the run log holds timings: compared by name)."""
    a, b = files_of(one), files_of(two)
    assert set(a) - {"map.tif.log"} == set(b) - {"map.tif.log"} == OUTPUTS, (sorted(a), sorted(b))
    for name in OUTPUTS:
        assert a[name] == b[name], f"{name} differs"


def classify_args(model, sc, out: Path, budget, *extra):
    return ["classify", "--model", model, "--spectral", sc["spectral"], "--sar", sc["sar"],
            "--out", out / "map.tif", "--confidence", out / "conf.tif", "--entropy", out / "ent.tif",
            "--memory-mb", budget, "--device", "cpu", *extra]


def one_process_with_blocks(sc, out: Path, rows: int, batch: int, budget, monkeypatch, diffusion):
    """What one process writes with ``rows`` rows per block and ``batch`` pixels per batch (the command's steps)."""
    import bdgf_core.inference as inf
    from bdgf_core.diffusion import DiffusionModel
    from bdgf_core.models import classes_of, load_predictor
    from bdgf_core.samples import open_inputs
    from bdgf_core.progress import Reporter

    monkeypatch.setattr(inf, "rows_per_block", lambda *a, **k: rows)
    pred, meta = load_predictor(sc["model"], batch_size=batch)
    spec, sar = open_inputs(sc["spectral"], sc["sar"], Reporter())
    dif = inf.DiffusionFeatures(DiffusionModel.load(diffusion), spec.height, spec.width)
    out.mkdir()
    inf.classify(pred, inf.Inputs(spec, sar, None, dif), out / "map.tif", classes_of(meta), out / "conf.tif",
                 out / "ent.tif", budget)


@pytest.mark.slow
def test_two_processes_write_the_files_of_one(scene, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    args = classify_args(scene["forest"], scene["tall"], one, FOREST_BUDGET)
    p = subprocess.run([sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    p, events = torchrun(classify_args(scene["forest"], scene["tall"], two, FOREST_BUDGET))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    # rank 0 alone reports: one result, no error
    assert [e["event"] for e in events].count("result") == 1
    assert not [e for e in events if e["event"] == "error"]
    assert any("shared by 2 processes" in e.get("message", "") for e in events)
    _, shares = block_shares(events, FOREST_HEIGHT)
    assert len(shares[0]) >= 2 and len(shares[1]) >= 2, shares  # each rank streams several blocks
    # the same map, categories, style, confidence and entropy; no parts, no partial files
    same_files(one, two)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_message_and_leaves_nothing(scene, tmp_path):
    """The feature raster is a VRT of a top and a bottom file and the bottom file is gone: only rank 1
    reads those rows. Rank 0 reports rank 1's message once, every process ends, nothing is written."""
    from osgeo import gdal

    from bdgf_core.raster import Grid, write_array

    from bdgf_core.distributed import split_rows
    from bdgf_core.inference import Inputs, plan_blocks
    from bdgf_core.models import load_predictor
    from bdgf_core.raster import RasterSource

    g, f = scene["grid"], scene["feats"]
    # The blocks this budget gives (rank 0 plans the same way): the cut goes 2 rows into rank 1's
    # first block, below every row rank 0 reads (its blocks plus the patch halo of 1 row).
    write_array(tmp_path / "plan.tif", f, g)
    predictor, _ = load_predictor(scene["model"], batch_size=16)
    rows, _ = plan_blocks(predictor, Inputs(RasterSource(scene["spectral"]), RasterSource(scene["sar"]),
                                            RasterSource(tmp_path / "plan.tif"), None), BUDGET)
    n_blocks = -(-g.height // rows)
    cut = split_rows(n_blocks, 2)[1][0] * rows + 2
    (tmp_path / "plan.tif").unlink()
    x0, dx, _, y0, _, dy = g.geotransform
    write_array(tmp_path / "top.tif", f[:, :cut], Grid(g.width, cut, g.geotransform, g.crs_wkt))
    write_array(tmp_path / "bottom.tif", f[:, cut:],
                Grid(g.width, g.height - cut, (x0, dx, 0.0, y0 + dy * cut, 0.0, dy), g.crs_wkt))
    gdal.BuildVRT(str(tmp_path / "features.vrt"), [str(tmp_path / "top.tif"), str(tmp_path / "bottom.tif")])
    (tmp_path / "bottom.tif").unlink()
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    p, events = torchrun(classify_args(scene["model"], scene, out, BUDGET, "--batch-size", 16,
                                       "--features", tmp_path / "features.vrt"), timeout=120)
    assert time.monotonic() - started < 60
    _, shares = block_shares(events)
    assert shares[0][-1][1] + 1 < cut <= shares[1][0][1] + 1, shares  # rank 0 reads no row of the bottom file
    assert p.returncode != 0
    errors = [e["message"] for e in events if e["event"] == "error"]
    assert len(errors) == 1, p.stdout[-3000:]
    assert errors[0].startswith("process 1: cannot read rows") and "bottom.tif" in errors[0], errors
    assert "\n" not in errors[0]
    assert not [e for e in events if e["event"] == "result"]
    assert files_of(out) == {}  # no map, no partial file, no folder of parts


@pytest.mark.slow
def test_two_processes_with_the_diffusion_model(scene, tmp_path, monkeypatch):
    """BDGF with the features computed in the run (--diffusion-model): rank 1 first recomputes the
    feature rows it shares with rank 0's last block as one process computed them."""
    from bdgf_core.diffusion.pretrain import DiffusionConfig, pretrain_ddpm
    from bdgf_core.raster import RasterSource

    d = scene["dir"]
    spec, sar = RasterSource(d / "spectral.tif").read(), RasterSource(d / "sar.tif").read()
    cfg = DiffusionConfig(widths=(4, 8), time_dim=8, tile=32, batch=4, lr=1e-3, steps=2, timesteps=(5,),
                          feature_channels=FEATURES, fit_tiles=2, fit_pixels=500)
    torch.manual_seed(0)
    pretrain_ddpm(spec, sar, None, cfg).save(tmp_path / "ddpm.bdgf")
    two = tmp_path / "two"
    two.mkdir()
    p, events = torchrun(classify_args(scene["model"], scene, two, DIFFUSION_BUDGET, "--batch-size", 256,
                                       "--diffusion-model", tmp_path / "ddpm.bdgf"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert any("computed block by block" in e.get("message", "") for e in events)
    rows, shares = block_shares(events)
    assert len(shares[0]) >= 1 and len(shares[1]) >= 1 and len(shares[0] + shares[1]) >= 3, shares
    one_process_with_blocks(scene, tmp_path / "one", rows, 256, DIFFUSION_BUDGET, monkeypatch, tmp_path / "ddpm.bdgf")
    same_files(tmp_path / "one", two)


@pytest.mark.parametrize("block_rows,patch", [(1, 5), (3, 3), (5, 1), (7, 5)])
def test_a_rank_resumes_the_diffusion_rows_of_one_process(block_rows, patch, tmp_path):
    """In process: the features a rank starting at block k gets for that block equal, bit for bit,
    those of a run from block 0 (blocks smaller than the halo too; patch 1 needs nothing)."""
    from bdgf_core.diffusion.pretrain import DiffusionConfig, pretrain_ddpm
    from bdgf_core.inference import DiffusionFeatures, Inputs, _read, _resume_diffusion
    from bdgf_core.raster import Grid, RasterSource, write_array

    rng = np.random.default_rng(1)
    h, w = 23, 19
    spec = (rng.normal(size=(5, h, w)) * 50 + 300).astype(np.float32)
    sar = rng.gamma(4.0, 0.25, size=(2, h, w)).astype(np.float32)
    cfg = DiffusionConfig(widths=(4, 8), time_dim=8, tile=4, batch=4, lr=1e-3, steps=2, timesteps=(5, 50),
                          feature_channels=3, fit_tiles=2, fit_pixels=200, extract_batch=2)
    torch.manual_seed(0)
    model = pretrain_ddpm(spec, sar, None, cfg)
    halo = patch // 2
    g = Grid(w, h, (0.0, 1.0, 0.0, float(h), 0.0, -1.0), "")
    sp, sa = write_array(tmp_path / "s.tif", spec, g), write_array(tmp_path / "a.tif", sar, g)

    def inputs():
        return Inputs(RasterSource(sp), RasterSource(sa), None, DiffusionFeatures(model, h, w))

    blocks = [(r, min(r + block_rows, h)) for r in range(0, h, block_rows)]
    whole = inputs()
    ref = []
    for r0, r1 in blocks:
        b = _read(whole, r0, r1, halo)
        ref.append(whole.diffusion.rows(*b.rows, *b.raw))
    for k in range(1, len(blocks)):
        fresh = inputs()
        _resume_diffusion(fresh, blocks, k, halo)
        b = _read(fresh, *blocks[k], halo)
        got = fresh.diffusion.rows(*b.rows, *b.raw)
        assert got.shape == ref[k].shape and np.array_equal(got, ref[k]), (k, np.abs(got - ref[k]).max())
