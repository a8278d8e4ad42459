"""Train BDGF under torchrun (Gloo, 2 CPU processes) gives the weights of one process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cli import result, run

ROOT = Path(__file__).resolve().parents[1]


def train_args(s, model):
    return ["train", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
            "--samples-per-class", "12", "--epochs", "2", "--batch-size", "16", "--patch-size", "3",
            "--no-guide-cnn", "--no-guide-transformer", "--no-guide-mamba", "--device", "cpu", "--seed", "3",
            "--model", model, "--progress", "json"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    _, ev, _ = run("generate-scene", "--out-dir", d, "--size", "32", "--bands", "6", "--seed", "5")
    return d, result(ev)


def torchrun(args, nproc=2, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "bdgf_core", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_two_processes_train_the_same_weights_as_one(scene):
    from bdgf_core.modelfile import load_model

    d, s = scene
    one = subprocess.run([sys.executable, "-m", "bdgf_core", *map(str, train_args(s, d / "one.bdgf"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(train_args(s, d / "two.bdgf"))
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    # rank 0 alone reports: one result event
    results = [json.loads(x) for x in two.stdout.splitlines() if x.startswith('{"event": "result"')]
    assert len(results) == 1
    a, b = load_model(d / "one.bdgf")[0], load_model(d / "two.bdgf")[0]
    weights = [k for k in a if k.startswith("net.") and a[k].dtype.kind == "f"]
    assert weights and set(weights) <= set(b)
    diffs = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in weights])
    # Float reductions in another order, nothing more. The only larger differences are in conv biases
    # followed by BatchNorm: their gradient is exactly zero (BN removes them), so Adam turns the
    # float noise of a zero gradient into steps of about lr; they do not change the network's output.
    assert np.percentile(diffs, 99) < 1e-5
    from bdgf_core.models import load_predictor
    from bdgf_core.patches import pad_reflect
    from bdgf_core.raster import RasterSource

    p1, p2 = load_predictor(d / "one.bdgf")[0], load_predictor(d / "two.bdgf")[0]
    spec, sar = (pad_reflect(RasterSource(x).read(), 3) for x in (s["spectral"], s["sar"]))
    prob1, prob2 = p1.predict_block(spec, sar, None), p2.predict_block(spec, sar, None)
    assert float(np.abs(prob1 - prob2).max()) < 1e-3
    assert (prob1.argmax(0) == prob2.argmax(0)).mean() > 0.999


def test_other_commands_refuse_torchrun(scene, tmp_path):
    d, s = scene
    p = torchrun(["train-baseline", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["groundtruth"],
                  "--model", tmp_path / "rf.bdgf", "--progress", "json"])
    assert p.returncode != 0 and "'train-baseline' runs in one process" in p.stdout
    assert "run under torchrun so far" in p.stdout
    assert not (tmp_path / "rf.bdgf").exists()


@pytest.mark.parametrize("bad, message", [
    (["--patch-size", "4"], "the patch size must be odd and positive"),
    (["--device", "cuda"], "no CUDA GPU"),
])
def test_a_bad_setting_is_reported_once_by_rank_0(scene, tmp_path, bad, message):
    """Every process meets the same error in the set-up; rank 0 alone reports it, the others end quietly."""
    import torch

    if "cuda" in bad and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --device cuda is not an error here")
    d, s = scene
    p = torchrun([*train_args(s, tmp_path / "m.bdgf"), *bad])
    errors = [json.loads(x)["message"] for x in p.stdout.splitlines() if x.startswith('{"event": "error"')]
    assert p.returncode != 0
    assert len(errors) == 1 and message in errors[0], p.stdout[-2000:] + p.stderr[-2000:]
    assert not list(tmp_path.iterdir())
