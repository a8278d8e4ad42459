"""The run log written beside a command's main output: what was run, what it said, what it wrote.

A user who finds a model or a map weeks later can read how it was made. Written once the run has
succeeded (atomically, like every output): a failed or cancelled run leaves no file, its error went
to the terminal or the QGIS log.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .atomic import atomic_output

#: command -> the argument naming its main output (a file, or a folder for the scene commands)
PRIMARY = {"pretrain": "model", "train": "model", "train-baseline": "model", "classify": "out",
           "assess": "report", "generate-scene": "out_dir", "import-mat": "out_dir"}


def log_path(command: str, args: Any) -> Optional[Path]:
    """``<main output>.log`` (``<folder>/<command>.log`` for commands that write a folder)."""
    key = PRIMARY.get(command)
    value = getattr(args, key, None) if key else None
    if not value:
        return None
    path = Path(value)
    return path / f"{command}.log" if key == "out_dir" else path.with_name(path.name + ".log")


def write_log(path: Path, argv: Sequence[str], messages: Sequence[str], outputs: dict, seconds: float) -> Path:
    import torch
    from osgeo import gdal

    from . import __version__

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# bdgf_core {__version__} run log, {now}",
             f"command: python -m bdgf_core {' '.join(shlex.quote(a) for a in argv)}",
             f"host: {platform.node()}; Python {platform.python_version()}, torch {torch.__version__}, "
             f"GDAL {gdal.__version__}", "", *messages, "", f"done in {seconds:.1f} s",
             "outputs: " + json.dumps(outputs, default=str), ""]
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


def argv_of(argv: Optional[Sequence[str]]) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)
