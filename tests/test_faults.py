"""The fault suite of issue 18: the parent killed, a full disk, SIGKILL at random moments, two runs at once.

Every test adds rows (fault, stage, tries, outputs intact, stray processes) to the file named by
BDGF_FAULTS_RECORD when it is set: `scripts/fault_report.py` runs this file that way and writes
docs/FAULTS.md. Scenes are tiny; the SIGKILL series fork their runs from a warm process
(multiprocessing's forkserver with torch and the runtime imported once; each run is a new
process running `bdgf_core`'s main, killed with SIGKILL), so 20 kills per command fit in CI.

"Intact" means: every output under its final name is either absent (or the previous file) or
complete and equal to the output of an uninterrupted run; no partial file is left once the
next run of the same outputs has run; stray processes are counted by an environment tag that
every process of a run inherits (torchrun workers included).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
HELPERS = TESTS / "faults_helpers.py"
sys.path.insert(0, str(TESTS))

import faults_helpers  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts processes in /proc (Linux)")

RECORD = os.environ.get("BDGF_FAULTS_RECORD")
TAG = "BDGF_FAULT_TAG"
KILLS = int(os.environ.get("BDGF_FAULT_KILLS", "20"))  # SIGKILLs per command
PRETRAIN = ["--profile", "fast", "--steps", "4", "--batch-size", "2", "--tile-size", "16", "--timesteps", "5,50",
            "--feature-channels", "4", "--device", "cpu"]
TRAIN = ["--samples-per-class", "6", "--patch-size", "3", "--device", "cpu"]
ENV = {"OMP_NUM_THREADS": "1", "LOKY_MAX_CPU_COUNT": "1"}


def record(fault: str, stage: str, tried: int, intact: int, strays: int, seconds: float, note: str = "") -> None:
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fault": fault, "stage": stage, "tried": tried, "intact": intact, "strays": strays,
                                "seconds": round(seconds, 1), "note": note}) + "\n")


# -- processes ---------------------------------------------------------------------------------------

def tagged_pids(tag: str) -> set[int]:
    """Processes whose environment carries ``tag`` (every process a run started inherits it)."""
    needle = f"{TAG}={tag}".encode()
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    found.add(int(d.name))
            except OSError:
                pass
    return found


def wait_gone(tag: str, deadline_s: float) -> tuple[int, float]:
    """(processes still alive after ``deadline_s``, seconds until all were gone)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        alive = {p for p in tagged_pids(tag) if not _zombie(p)}
        if not alive:
            return 0, time.monotonic() - t0
        time.sleep(0.05)
    alive = {p for p in tagged_pids(tag) if not _zombie(p)}
    for p in alive:  # leave nothing behind for the next test
        with _suppress():
            os.kill(p, signal.SIGKILL)
    return len(alive), time.monotonic() - t0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def runtime(*args) -> list[str]:
    return [sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"]


def run(*args, **kw) -> dict:
    """Run the runtime to the end; its result outputs."""
    p = subprocess.run(runtime(*args), cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, **ENV), **kw)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return next(json.loads(x)["outputs"] for x in p.stdout.splitlines() if x.startswith('{"event": "result"'))


_MP = None


def forked(argv: list[str], log: Path) -> multiprocessing.Process:
    """``bdgf_core ARGV`` in a process forked from the warm forkserver (see the module docstring)."""
    global _MP
    if _MP is None:
        for k, v in ENV.items():
            os.environ.setdefault(k, v)
        _MP = multiprocessing.get_context("forkserver")
        _MP.set_forkserver_preload(faults_helpers.PRELOAD)
    p = _MP.Process(target=faults_helpers.run_cli, args=([*map(str, argv), "--progress", "json"], str(log)))
    p.start()
    return p


def forked_ok(argv: list[str], log: Path, timeout: float = 300) -> dict:
    p = forked(argv, log)
    p.join(timeout)
    text = log.read_text()
    assert p.exitcode == 0, text[-3000:]
    return next(json.loads(x)["outputs"] for x in text.splitlines() if x.startswith('{"event": "result"'))


def leftovers(folder: Path) -> list[str]:
    """Partial files, row-parts folders and lock files in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if any(t in p.name for t in (".bdgf-partial", ".bdgf-parts-",
                                                                               ".bdgf-lock")))


# -- scenes and references ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A 32 x 32 scene, its diffusion model and features, a BDGF model, and a 160 x 160 scene with a
    forest and its maps: the outputs of uninterrupted runs, to compare interrupted ones with."""
    from bdgf_core.scene import generate_scene

    root = tmp_path_factory.mktemp("faults")
    s = generate_scene(root / "scene", size=32, bands=8, seed=1)
    b = generate_scene(root / "big", size=160, bands=8, seed=1)
    out = root / "ref"
    out.mkdir()
    r = {"root": root, "spectral": s.spectral, "sar": s.sar, "gt": s.groundtruth,
         "big_spectral": b.spectral, "big_sar": b.sar, "big_gt": b.groundtruth}
    # the first fork starts the forkserver (imports torch): not part of the durations measured below
    forked_ok(["generate-scene", "--out-dir", root / "warm-up", "--size", "16", "--bands", "2"], root / "warm-up.log")
    t0 = time.monotonic()
    forked_ok(["pretrain", "--spectral", s.spectral, "--sar", s.sar, *PRETRAIN, "--model", out / "d.bdgf",
               "--features", out / "f.tif"], root / "pretrain.log")
    r["pretrain_s"] = time.monotonic() - t0
    r["features"] = out / "f.tif"
    t0 = time.monotonic()
    forked_ok(["train", "--spectral", s.spectral, "--sar", s.sar, "--groundtruth", s.groundtruth, *TRAIN,
               "--epochs", "6", "--features", out / "f.tif", "--model", out / "m.bdgf"], root / "train.log")
    r["train_s"] = time.monotonic() - t0
    forked_ok(["train-baseline", "--spectral", b.spectral, "--sar", b.sar, "--groundtruth", b.groundtruth,
               "--trees", "20", "--model", out / "rf.bdgf"], root / "rf.log")
    t0 = time.monotonic()
    forked_ok(classify_args(r, out / "rf.bdgf", out), root / "classify.log")
    r["classify_s"] = time.monotonic() - t0
    r["out"] = out
    return r


def classify_args(r: dict, model: Path, folder: Path) -> list:
    return ["classify", "--model", model, "--spectral", r["big_spectral"], "--sar", r["big_sar"],
            "--out", folder / "map.tif", "--confidence", folder / "conf.tif", "--entropy", folder / "ent.tif",
            "--memory-mb", "32"]


def same_raster(a: Path, b: Path) -> bool:
    from osgeo import gdal

    return np.array_equal(gdal.Open(str(a)).ReadAsArray(), gdal.Open(str(b)).ReadAsArray(), equal_nan=True)


def same_model(a: Path, b: Path) -> bool:
    from bdgf_core.modelfile import load_model

    (ta, _), (tb, _) = load_model(a), load_model(b)  # checks the checksum: a torn file is refused
    keys = [k for k in ta if not k.startswith("forest.")] or list(ta)
    return sorted(ta) == sorted(tb) and all(np.array_equal(ta[k], tb[k]) for k in keys)


def intact(path: Path, reference: Path) -> bool:
    """Absent, or complete and equal to the uninterrupted run's output."""
    if not path.exists():
        return True
    try:
        return same_raster(path, reference) if path.suffix == ".tif" else same_model(path, reference)
    except Exception:  # noqa: BLE001 - a torn file fails to open: not intact
        return False


# -- parent killed ---------------------------------------------------------------------------------------

def _stage_argv(stage: str, r: dict, folder: Path) -> tuple[list[str], list[str]]:
    """(runtime argv, names expected in the folder afterwards) of a run that lasts long enough."""
    s = r
    if stage == "pretrain":
        return (runtime("pretrain", "--spectral", s["spectral"], "--sar", s["sar"], *PRETRAIN[:2], "--steps", "2000",
                        "--batch-size", "2", "--tile-size", "16", "--device", "cpu", "--model", folder / "d.bdgf",
                        "--features", folder / "f.tif"), [])  # a checkpoint each 200 steps or 60 s: none yet
    train = ["train", "--spectral", s["spectral"], "--sar", s["sar"], "--groundtruth", s["gt"], *TRAIN,
             "--epochs", "2000", "--features", s["features"], "--model", folder / "m.bdgf"]
    if stage == "train":
        return runtime(*train), [".m.bdgf.checkpoint"]
    if stage == "torchrun":
        argv = runtime(*train)
        at = argv.index("-m")
        return argv[:at] + ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + argv[at:], \
            [".m.bdgf.checkpoint"]
    return runtime(*classify_args(r, r["out"] / "rf.bdgf", folder)), []


@pytest.mark.parametrize("stage", ["pretrain", "train", "classify", "torchrun"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_the_runtime_ends_with_its_parent(ref, tmp_path, sig, stage):
    """QGIS (here the real bridge in a parent process) killed mid-run: the runtime, and torchrun's
    agent and workers, stop within seconds and leave what a cancel leaves (exit status 130, the
    checkpoint). The test process adopts the orphans (a child subreaper) to read that status:
    before issue 18 the runtime died of its next progress line on the closed pipe (status 1)."""
    argv, expected = _stage_argv(stage, ref, tmp_path)
    tag = uuid.uuid4().hex
    env = dict(os.environ, **ENV, **{TAG: tag})
    _subreaper(True)
    runtime_pid, code = None, None
    try:
        parent = subprocess.Popen([sys.executable, str(HELPERS), "parent", *argv], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        seen = []
        after = 5.0 if stage in ("train", "torchrun") else 0.0  # train: 0-5 % are the samples, then epochs
        for line in parent.stdout:  # the stage is running once its progress arrived
            seen.append(line)
            if line.startswith("progress ") and float(line.split()[1]) > after:
                break
        else:
            pytest.fail("the run ended before the parent could be killed: " + "".join(seen[-20:]))
        runtime_pid = next(p for p in tagged_pids(tag) if _ppid(p) == parent.pid)
        t0 = time.monotonic()
        os.kill(parent.pid, getattr(signal, sig))
        parent.wait(10)
        parent.stdout.close()
        while code is None and time.monotonic() - t0 < 20:  # adopted once its parent is gone
            try:
                pid, status = os.waitpid(runtime_pid, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid:
                code = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.05)
        strays, _ = wait_gone(tag, 20.0)  # torchrun's workers too
        seconds = time.monotonic() - t0
    finally:
        _subreaper(False)
        _reap(tag)
    left = sorted(p.name for p in tmp_path.iterdir())
    cancelled = code == 130 or stage == "torchrun"  # torchrun's agent reports its workers' failure its own way
    record(f"parent killed ({sig})", stage, 1, int(left == expected and cancelled), strays, time.monotonic() - t0,
           f"all its processes gone {seconds:.1f} s after the parent's death; the runtime's exit status {code}")
    assert strays == 0, f"{strays} processes of the run outlived its parent"
    assert seconds < 15, f"the runtime took {seconds:.1f} s to end"
    assert cancelled, f"the runtime ended with status {code}, not as a cancel (130)"
    assert left == expected, left


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _subreaper(on: bool) -> None:
    """Make this process the one orphaned descendants are given to (Linux), to read their status."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap(tag: str) -> None:
    """Collect the adopted processes of a run (zombies would otherwise look alive to other tests)."""
    for pid in tagged_pids(tag):
        with _suppress():  # not ours: its parent reaps it
            os.waitpid(pid, os.WNOHANG)


def _lifeline_run(tmp_path: Path, ref: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen(runtime("train", "--spectral", ref["spectral"], "--sar", ref["sar"], "--groundtruth",
                                    ref["gt"], *TRAIN, "--epochs", "2000", "--features", ref["features"], "--model",
                                    tmp_path / "m.bdgf"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **popen)


def _until_epoch(p: subprocess.Popen) -> None:
    for line in p.stdout:  # 0-5 % are the samples, then the epochs
        if line.startswith('{"event": "progress"') and json.loads(line)["percent"] > 5:
            return
    pytest.fail("the run ended early: " + p.stderr.read()[-2000:])


def test_stdin_closing_cancels_a_bridged_run_on_any_platform(ref, tmp_path):
    """The portable lifeline alone (no parent-death signal: the parent lives on): the bridge's
    stdin pipe closes, the runtime cancels as on SIGTERM, keeping its checkpoint."""
    p = _lifeline_run(tmp_path, ref, stdin=subprocess.PIPE, env=dict(os.environ, **ENV, BDGF_LIFELINE="stdin"))
    _until_epoch(p)
    t0 = time.monotonic()
    p.stdin.close()
    try:
        code = p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail("the runtime went on after its stdin closed")
    rest = p.stdout.read()
    p.stderr.close()
    record("stdin closed (portable lifeline)", "train", 1, int(code == 130), 0, time.monotonic() - t0)
    assert code == 130, rest
    assert "The finished epochs are kept in .m.bdgf.checkpoint" in rest
    assert sorted(x.name for x in tmp_path.iterdir()) == [".m.bdgf.checkpoint"]


def test_a_closed_progress_pipe_cancels_cleanly(ref, tmp_path):
    """The reader of the progress lines is gone (no lifeline asked for): the next line cancels the
    run, checkpoint kept, exit 130, no traceback (was: an internal error or a crash at exit)."""
    p = _lifeline_run(tmp_path, ref, stdin=subprocess.DEVNULL, env=dict(os.environ, **ENV))
    _until_epoch(p)
    p.stdout.close()
    code = p.wait(30)
    err = p.stderr.read()
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == [".m.bdgf.checkpoint"]


def test_no_lifeline_for_a_run_started_by_hand(monkeypatch):
    """`nohup python -m bdgf_core ... &` must outlive its shell: no watch without the bridge's variable."""
    from bdgf_core import lifeline

    for k in ("BDGF_LIFELINE", "TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert lifeline.install() == []


# -- disk full ------------------------------------------------------------------------------------------------

def _disk_full_cases(r: dict, f: Path):
    s = r
    return {
        "map (classify)": ("map.tif", 1024, ["classify", "--model", r["out"] / "rf.bdgf", "--spectral", s["big_spectral"],
                                             "--sar", s["big_sar"], "--out", f / "map.tif", "--memory-mb", "32"], []),
        "feature raster (pretrain)": ("f.tif", 4096, ["pretrain", "--spectral", s["spectral"], "--sar", s["sar"],
                                                      *PRETRAIN, "--model", f / "d.bdgf", "--features", f / "f.tif"],
                                      [".d.bdgf.checkpoint"]),
        "diffusion model (pretrain)": ("d.bdgf", 65536, ["pretrain", "--spectral", s["spectral"], "--sar", s["sar"],
                                                         *PRETRAIN, "--model", f / "d.bdgf", "--features", f / "f.tif"],
                                       [".d.bdgf.checkpoint"]),
        "model (train-baseline)": ("rf.bdgf", 2048, ["train-baseline", "--spectral", s["spectral"], "--sar", s["sar"],
                                                     "--groundtruth", s["gt"], "--trees", "5", "--model", f / "rf.bdgf"],
                                   []),
        "checkpoint (train)": (".m.bdgf.checkpoint", 65536, ["train", "--spectral", s["spectral"], "--sar", s["sar"],
                                                             "--groundtruth", s["gt"], *TRAIN, "--epochs", "2",
                                                             "--features", s["features"], "--model", f / "m.bdgf"], []),
    }


@pytest.mark.parametrize("kind", ["map (classify)", "feature raster (pretrain)", "diffusion model (pretrain)",
                                  "model (train-baseline)", "checkpoint (train)"])
def test_a_full_disk_gives_one_message_and_no_partial_output(ref, tmp_path, kind):
    """The file-size limit (RLIMIT_FSIZE) is lowered as the file starts being written: the real
    write (GDAL, safetensors) fails. One line names the file and the space it needs; nothing
    partial is left; what a rerun needs (the pretraining checkpoint) is kept."""
    name, limit, args, expected = _disk_full_cases(ref, tmp_path)[kind]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(HELPERS), "disk-full", name, str(limit), *map(str, args), "--progress",
                        "json"], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, **ENV), timeout=300)
    errors = [json.loads(x)["message"] for x in p.stdout.splitlines() if x.startswith('{"event": "error"')]
    left = sorted(x.name for x in tmp_path.iterdir())
    ok = p.returncode == 1 and len(errors) == 1 and left == expected
    record("disk full (file-size limit)", kind, 1, int(ok), 0, time.monotonic() - t0, errors[0] if errors else "")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    assert len(errors) == 1, p.stdout[-2000:]
    assert str(tmp_path / name) in errors[0] and "needs about " in errors[0] and "B, but" in errors[0], errors[0]
    assert "file-size limit" in errors[0] and "\n" not in errors[0]
    assert left == expected, left


def test_a_full_small_file_system(ref, tmp_path):
    """A real full disk where the machine allows mounting a small tmpfs (root); skipped elsewhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        t0 = time.monotonic()
        p = subprocess.run(runtime(*classify_args(ref, ref["out"] / "rf.bdgf", disk)), cwd=ROOT, capture_output=True,
                           text=True, env=dict(os.environ, **ENV), timeout=300)
        errors = [json.loads(x)["message"] for x in p.stdout.splitlines() if x.startswith('{"event": "error"')]
        left = sorted(x.name for x in disk.iterdir())
        record("disk full (64 KB file system)", "map (classify)", 1, int(p.returncode == 1 and not left), 0,
               time.monotonic() - t0, errors[0] if errors else "")
        assert p.returncode == 1 and len(errors) == 1, p.stdout[-2000:] + p.stderr[-2000:]
        assert errors[0].startswith("the disk is full: could not write " + str(disk)), errors[0]
        assert "needs" in errors[0] and "free" in errors[0]
        assert left == [], left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- SIGKILL at random moments -------------------------------------------------------------------------------

def _kill_series(name: str, argv: list, outputs: dict[str, Path], folder: Path, seed: int,
                 previous: bool = True) -> None:
    """SIGKILL ``argv`` KILLS times at seeded moments spread over a whole run (stratified), rerunning
    after each kill; after every kill each output is absent, the previous file or the complete new
    one; a last uninterrupted rerun must give the reference outputs and leave nothing else."""
    rng = random.Random(seed)
    log = folder.parent / f"{folder.name}.log"
    t0 = time.monotonic()  # the length of a whole run now: the load of 2 shared cores swings 5x
    forked_ok(argv, log)
    duration = time.monotonic() - t0
    for x in folder.iterdir():
        if x.name.endswith(".log"):
            x.unlink()  # the run log: not one of the outputs compared
    if previous:  # older files under the final names: a kill must leave them or the complete new ones
        for n, refp in outputs.items():
            (folder / n).write_bytes(b"previous output\n")
    prev = {n: (folder / n).read_bytes() if (folder / n).exists() else None for n in outputs}
    kills = finished = bad = 0
    partials_seen = 0
    t_start = time.monotonic()
    while kills < KILLS and kills + finished < 3 * KILLS:
        at = (kills + rng.random()) / KILLS * 0.95 * duration  # one moment in each 1/KILLS of the run
        p = forked(argv, log)
        started = time.monotonic()
        p.join(at)
        if p.is_alive():
            p.kill()
            p.join()
            kills += 1
        else:
            assert p.exitcode == 0, log.read_text()[-3000:]
            finished += 1
            if "resuming from the checkpoint" not in log.read_text():  # a whole run: the load now
                duration = time.monotonic() - started
        for n, refp in outputs.items():
            path = folder / n
            if path.exists() and prev[n] is not None and path.read_bytes() == prev[n]:
                continue
            if not intact(path, refp):
                bad += 1
        partials_seen += len([x for x in leftovers(folder) if "partial" in x])
    forked_ok(argv, log)
    complete = all(intact(folder / n, refp) and (folder / n).exists() for n, refp in outputs.items())
    left = leftovers(folder) + [x.name for x in folder.iterdir() if x.name.endswith(".checkpoint")]
    record("SIGKILL at random moments", name, kills, kills - bad if complete and not left else 0, 0,
           time.monotonic() - t_start, f"{finished} runs finished between kills; partial files seen after kills "
                                       f"{partials_seen}, left after the next run {len(left)}")
    assert kills >= KILLS, f"only {kills} kills landed before the runs ended"
    assert bad == 0, f"{bad} outputs were torn under their final name"
    assert complete, "the run after the kills did not give the uninterrupted run's outputs"
    assert not left, left


def test_sigkill_at_random_moments_pretrain(ref, tmp_path):
    """Pretraining steps, the projection, the feature raster and the model file, killed 20 times."""
    f = tmp_path / "run"
    f.mkdir()
    _kill_series("pretrain (steps, features, model)",
                 ["pretrain", "--spectral", ref["spectral"], "--sar", ref["sar"], *PRETRAIN, "--model", f / "d.bdgf",
                  "--features", f / "f.tif"],
                 {"d.bdgf": ref["out"] / "d.bdgf", "f.tif": ref["out"] / "f.tif"}, f, seed=1)


def test_sigkill_at_random_moments_train(ref, tmp_path):
    """Training epochs (a checkpoint each) and the model file, killed 20 times; resumes to the same weights."""
    f = tmp_path / "run"
    f.mkdir()
    _kill_series("train (epochs, model)",
                 ["train", "--spectral", ref["spectral"], "--sar", ref["sar"], "--groundtruth", ref["gt"], *TRAIN,
                  "--epochs", "6", "--features", ref["features"], "--model", f / "m.bdgf"],
                 {"m.bdgf": ref["out"] / "m.bdgf"}, f, seed=2)


def test_sigkill_at_random_moments_classify(ref, tmp_path):
    """Classification blocks and the three rasters, killed 20 times."""
    f = tmp_path / "run"
    f.mkdir()
    _kill_series("classify (blocks, map, confidence, entropy)", classify_args(ref, ref["out"] / "rf.bdgf", f),
                 {n: ref["out"] / n for n in ("map.tif", "conf.tif", "ent.tif")}, f, seed=3)


# -- two runs at once ---------------------------------------------------------------------------------------------

def _wait_for(log: Path, text: str, p: multiprocessing.Process, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if log.exists() and text in log.read_text():
            return
        if not p.is_alive():
            pytest.fail("the first run ended early: " + log.read_text()[-2000:])
        time.sleep(0.05)
    pytest.fail(f"no {text!r} in time")


def _second_is_refused(first_argv: list, second_argv: list, folder: Path, wait_text: str = "",
                       lock: Path | None = None) -> tuple[str, dict]:
    """The second run, started while the first holds its lock (``lock`` exists, or ``wait_text`` was logged)."""
    a = forked(first_argv, folder / "a.log")
    if lock is not None:
        deadline = time.monotonic() + 120
        while not lock.exists() and a.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lock.exists(), (folder / "a.log").read_text()[-2000:]
    else:
        _wait_for(folder / "a.log", wait_text, a)
    # the first run is held (SIGSTOP) while the second tries: a fast first run (a forest's map takes
    # 0.1 s on a quiet machine) would otherwise be done before the second starts
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = forked(second_argv, folder / "b.log")
        b.join(120)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a.join(300)
    errors = [json.loads(x)["message"] for x in (folder / "b.log").read_text().splitlines()
              if x.startswith('{"event": "error"')]
    assert a.exitcode == 0, (folder / "a.log").read_text()[-2000:]
    assert b.exitcode == 1 and errors, (folder / "b.log").read_text()[-2000:]
    result = next(json.loads(x)["outputs"] for x in (folder / "a.log").read_text().splitlines()
                  if x.startswith('{"event": "result"'))
    return errors[0], result


def test_two_runs_writing_the_same_model_the_second_is_refused(ref, tmp_path):
    f = tmp_path / "out"
    f.mkdir()
    t0 = time.monotonic()
    argv = ["train", "--spectral", ref["spectral"], "--sar", ref["sar"], "--groundtruth", ref["gt"], *TRAIN,
            "--epochs", "6", "--features", ref["features"], "--model", f / "m.bdgf"]
    message, _ = _second_is_refused(argv, argv, tmp_path, '{"event": "progress"')
    ok = same_model(f / "m.bdgf", ref["out"] / "m.bdgf") and leftovers(f) == []
    record("two runs at once", "same model (train)", 1, int(ok), 0, time.monotonic() - t0, message)
    assert message.startswith("another run (process ") and f"is writing {f / 'm.bdgf'}" in message, message
    assert message.endswith("wait for it to finish, or choose another output file")
    assert ok


def test_two_runs_resuming_the_same_checkpoint_one_resumes(ref, tmp_path):
    """A training killed after some epochs, then two reruns at once: one resumes to the weights of an
    uninterrupted run, the other is refused; the checkpoint is never written by both."""
    f = tmp_path / "out"
    f.mkdir()
    t0 = time.monotonic()
    argv = ["train", "--spectral", ref["spectral"], "--sar", ref["sar"], "--groundtruth", ref["gt"], *TRAIN,
            "--epochs", "6", "--features", ref["features"], "--model", f / "m.bdgf"]
    k = forked(argv, tmp_path / "k.log")
    t0k = time.monotonic()
    while not (f / ".m.bdgf.checkpoint").exists() and k.is_alive() and time.monotonic() - t0k < 120:
        time.sleep(0.02)  # a finished epoch
    k.kill()
    k.join()
    assert (f / ".m.bdgf.checkpoint").exists()
    message, _ = _second_is_refused(argv, argv, tmp_path, "resuming from the checkpoint")
    ok = same_model(f / "m.bdgf", ref["out"] / "m.bdgf") and leftovers(f) == []
    record("two runs at once", "same checkpoint (train resume)", 1, int(ok), 0, time.monotonic() - t0, message)
    assert "another run" in message and "resuming its checkpoint" in message
    assert ok, leftovers(f)


def test_two_runs_writing_the_same_map_the_second_is_refused(ref, tmp_path):
    f = tmp_path / "out"
    f.mkdir()
    t0 = time.monotonic()
    argv = classify_args(ref, ref["out"] / "rf.bdgf", f)
    message, _ = _second_is_refused(argv, argv, tmp_path, lock=f / ".map.tif.bdgf-lock")
    ok = all(same_raster(f / n, ref["out"] / n) for n in ("map.tif", "conf.tif", "ent.tif")) and leftovers(f) == []
    record("two runs at once", "same map (classify)", 1, int(ok), 0, time.monotonic() - t0, message)
    assert "another run" in message and str(f) in message
    assert ok


def test_two_runs_with_different_outputs_work_side_by_side(ref, tmp_path):
    t0 = time.monotonic()
    argv = ["train", "--spectral", ref["spectral"], "--sar", ref["sar"], "--groundtruth", ref["gt"], *TRAIN,
            "--epochs", "6", "--features", ref["features"]]
    a = forked([*argv, "--model", tmp_path / "a.bdgf"], tmp_path / "a.log")
    b = forked([*argv, "--model", tmp_path / "b.bdgf"], tmp_path / "b.log")
    a.join(300)
    b.join(300)
    ok = a.exitcode == b.exitcode == 0 and all(same_model(tmp_path / n, ref["out"] / "m.bdgf")
                                                for n in ("a.bdgf", "b.bdgf"))
    record("two runs at once", "different models, same folder (train)", 2, 2 * int(ok), 0, time.monotonic() - t0)
    assert ok, (tmp_path / "a.log").read_text()[-1500:] + (tmp_path / "b.log").read_text()[-1500:]
    assert leftovers(tmp_path) == []
