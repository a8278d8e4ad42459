"""A stand-in for `python -m bdgf_core COMMAND --progress json`, for testing the QGIS bridge.

Usage: python fake_runtime.py MODE [ARG ...]

    ok [STEPS]                  progress events 0..100, info, warning, a plain stdout line,
                                a stderr line, then a result event; exit 0
    error MESSAGE               an error event; exit 1
    sleep PARTIAL_DEST [--ignore-term | --resume-hint]
                                writes the partial file of PARTIAL_DEST (as bdgf_core.atomic
                                names it), reports progress, then sleeps forever; SIGTERM exits
                                130 (or is ignored with --ignore-term; with --resume-hint it
                                first reports the runtime's cancel message naming a checkpoint)
    crash                       a few stderr lines, then kills itself with SIGKILL
    exit CODE                   stderr lines, then exits with CODE and no error event
    noresult                    progress only; exit 0 without a result event
    epochs N DELAY              N progress events with an "epoch i/N: loss ..." message, DELAY seconds
                                apart, then a result event
    lifeline                    reports (as the result) what the runtime's lifeline would watch: the
                                BDGF_LIFELINE variable, whether stdin is a pipe, and whether it is
                                still open (no end of file within 0.3 s)
    [-m torch.distributed.run OPTIONS] -m bdgf_core COMMAND --progress json ARGS...
                                pretends to be the runtime: appends {"command", "args"} as one
                                JSON line to $FAKE_BDGF_LOG (when set) and reports outputs taken
                                from the arguments (--out, --model, --report...), writing no
                                file; with
                                FAKE_BDGF_FAIL=MESSAGE it reports that error instead
"""
import json
import os
import signal
import sys
import time
from pathlib import Path


def emit(**event):
    print(json.dumps(event), flush=True)


OUTPUT_FLAGS = {  # result key -> flag of the output path
    "map": "--out", "confidence": "--confidence", "entropy": "--entropy", "model": "--model",
    "report": "--report", "json": "--json", "csv": "--csv", "features": "--features",
}


def pretend_runtime(argv):
    launcher = []
    if argv[1] == "torch.distributed.run":  # -m torch.distributed.run OPTIONS -m bdgf_core COMMAND ...
        at = argv.index("bdgf_core")
        launcher, argv = argv[:at - 1], argv[at - 1:]
    command, args = argv[2], argv[3:]
    if os.environ.get("FAKE_BDGF_LOG"):
        with open(os.environ["FAKE_BDGF_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"command": command, "args": args, "launcher": launcher}) + "\n")
    emit(event="info", message=f"fake {command}")
    emit(event="progress", percent=50.0)
    if os.environ.get("FAKE_BDGF_FAIL"):
        emit(event="error", message=os.environ["FAKE_BDGF_FAIL"])
        return 1
    values = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    outputs = {}
    for key, flag in OUTPUT_FLAGS.items():
        if command == "pretrain" or flag != "--features":
            outputs[key] = values.get(flag)
    if command == "generate-scene":
        d = Path(values["--out-dir"])
        outputs = {"spectral": str(d / "spectral.tif"), "sar": str(d / "sar.tif"),
                   "groundtruth": str(d / "groundtruth.gpkg"), "reference": str(d / "reference.tif"),
                   "class_field": "class"}
    if command == "classify":
        outputs["style"] = str(Path(values["--out"]).with_suffix(".qml"))
    if command == "assess":
        outputs.update(oa=87.5, aa=80.25, kappa=79.0)
    if command == "train-baseline":
        outputs.update(train_pixels=300, test_pixels=1200)
    emit(event="result", outputs=outputs)
    return 0


def main(argv):
    mode = argv[0] if argv else "ok"
    if mode == "-m":
        return pretend_runtime(argv)
    if mode == "ok":
        steps = int(argv[1]) if len(argv) > 1 else 4
        emit(event="info", message="fake runtime started")
        for i in range(steps + 1):
            emit(event="progress", percent=100.0 * i / steps)
        emit(event="warning", message="a fake warning")
        print("plain text line", flush=True)
        print("a line on stderr", file=sys.stderr, flush=True)
        emit(event="result", outputs={"map": "/tmp/map.tif", "oa": 91.5, "entropy": None})
        return 0
    if mode == "error":
        emit(event="progress", percent=10.0)
        emit(event="error", message=argv[1] if len(argv) > 1 else "bad input")
        return 1
    if mode == "sleep":
        dest = Path(argv[1])
        partial = dest.with_name(f".{dest.stem}.bdgf-partial{os.getpid()}{dest.suffix}")
        partial.write_bytes(b"partial")
        def resume_hint(*_):
            emit(event="error", message="cancelled by the user; no output was written. The finished epochs are "
                                        "kept in .m.bdgf.checkpoint: the same command resumes from there")
            sys.exit(130)

        if "--ignore-term" in argv:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif "--resume-hint" in argv:
            signal.signal(signal.SIGTERM, resume_hint)
        else:
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
        emit(event="progress", percent=5.0)
        emit(event="info", message=f"writing {partial}")
        while True:
            time.sleep(0.05)
    if mode == "crash":
        emit(event="progress", percent=50.0)
        for i in range(30):
            print(f"stderr line {i}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(5)
        return 0
    if mode == "exit":
        print("Traceback (most recent call last):", file=sys.stderr, flush=True)
        print("RuntimeError: something broke", file=sys.stderr, flush=True)
        return int(argv[1])
    if mode == "epochs":
        n, delay = int(argv[1]), float(argv[2])
        for i in range(1, n + 1):
            time.sleep(delay)
            emit(event="progress", percent=100.0 * i / n, message=f"epoch {i}/{n}: loss {1.0 / i:.4f}")
        emit(event="result", outputs={"epochs": n})
        return 0
    if mode == "lifeline":
        import select
        import stat

        pipe = stat.S_ISFIFO(os.fstat(0).st_mode)
        readable = select.select([0], [], [], 0.3)[0]  # a closed pipe or /dev/null is readable (EOF) at once
        emit(event="result", outputs={"variable": os.environ.get("BDGF_LIFELINE"), "pipe": pipe,
                                      "open": pipe and not readable,
                                      "parent": os.environ.get("BDGF_PARENT_PID") == str(os.getppid())})
        return 0
    if mode == "noresult":
        emit(event="progress", percent=100.0)
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
