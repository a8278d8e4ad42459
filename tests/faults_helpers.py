"""Processes of the fault suite (tests/test_faults.py): a QGIS stand-in, a runtime with a full disk,
and runtime commands forked from a warm process (so that 20 SIGKILLs per command fit in CI).

    python tests/faults_helpers.py parent ARGV...        the real QGIS bridge (bdgf_qgis.runtime.run_process)
                                                         runs ARGV; prints "progress P [message]" per event
    python tests/faults_helpers.py disk-full NAME BYTES ARGV...
                                                         runs `bdgf_core ARGV` with the file-size limit set
                                                         to BYTES once the file NAME starts being written
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parent(argv: list[str]) -> int:
    """Play QGIS: run the runtime through the real bridge, printing what reaches the feedback."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from bdgf_qgis import runtime

    class Printing(QgsProcessingFeedback):
        def setProgress(self, value):  # noqa: N802
            print(f"progress {float(value):.2f}", flush=True)

        def setProgressText(self, text):  # noqa: N802
            print(f"text {text}", flush=True)

    print(f"parent {os.getpid()}", flush=True)
    try:
        result = runtime.run_process(argv, Printing())
    except QgsProcessingException as exc:
        print(f"exception {exc}", flush=True)
        return 1
    print(f"result {result}", flush=True)
    return 0


def disk_full(name: str, limit: int, argv: list[str]) -> int:
    """The runtime, whose disk 'fills' (RLIMIT_FSIZE = limit) as the file ``name`` starts: the
    real write (GDAL, safetensors) then fails with EFBIG, as it would with ENOSPC."""
    import resource

    from bdgf_core import atomic, cli

    original = atomic.partial_path

    def partial_path(dest):
        if Path(dest).name == name:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return original(dest)

    atomic.partial_path = partial_path
    return cli.main(argv)


def run_cli(argv: list[str], log: str) -> None:
    """Target of a forked process: ``bdgf_core ARGV`` with stdout and stderr to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from bdgf_core import cli

    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


PRELOAD = ["faults_helpers", "numpy", "torch", "osgeo.gdal", "bdgf_core.cli", "bdgf_core.commands_deep",
           "bdgf_core.training", "bdgf_core.inference", "bdgf_core.diffusion", "bdgf_core.baseline",
           "bdgf_core.samples", "sklearn.ensemble", "safetensors.numpy"]


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "parent":
        sys.exit(parent(rest))
    if mode == "disk-full":
        sys.exit(disk_full(rest[0], int(rest[1]), rest[2:]))
    sys.exit(f"unknown mode {mode}")
