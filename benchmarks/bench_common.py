"""Helpers shared by the benchmark scripts: running the command line, naming the machine."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: object, env: dict | None = None) -> dict:
    """Run ``python -m bdgf_core ...`` with JSON progress and return its result's outputs; stop on failure."""
    cmd = [sys.executable, "-m", "bdgf_core", *map(str, args), "--progress", "json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return next(e["outputs"] for e in events if e["event"] == "result")


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
