"""Which files a command writes, and the refusal of any that would overwrite one it reads.

A user's files are never overwritten: ``classify --spectral scene.tif --out scene.tif`` once
replaced a 4 MB image by a 3 KB map. Every command's outputs, and the files written beside them
(``.aux.xml``, the ``.qml`` style, the run log, the report's ``.json`` twin), are compared with its
inputs and the files that belong to them (their ``.aux.xml``, ``.ovr``, ``.msk``, ``.qml`` and, for
a shapefile, every file of its stem) before any work starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from .errors import BdgfError

#: per command, the options naming files it writes; every other path option it has is an input
OUTPUT_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "pretrain": ("model", "features"),
    "train": ("model", "report"),
    "train-baseline": ("model", "report"),
    "classify": ("out", "confidence", "entropy"),
    "assess": ("report", "json", "csv"),
}
#: options that may name an input file, by their argparse dest
INPUT_OPTIONS = ("spectral", "sar", "features", "groundtruth", "test_groundtruth", "map", "model",
                 "diffusion_model", "hs", "train", "test")
RASTER_SUFFIXES = (".tif", ".tiff")  # what the commands write rasters as
OWN_SUFFIXES = (".bdgf", ".html", ".htm", ".json", ".csv")  # files of ours: no GIS side files belong to them
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qml", ".qmd")


def written_beside(output: str) -> List[Path]:
    """The output and the files a run writes beside it: the run log; for a raster, GDAL's .aux.xml and
    the .qml style; for an HTML report, its .json twin."""
    p = Path(output)
    files = [p, p.with_name(p.name + ".log")]
    if p.suffix.lower() in RASTER_SUFFIXES:
        files += [p.with_name(p.name + ".aux.xml"), p.with_suffix(".qml")]
    if p.suffix.lower() in (".html", ".htm"):
        files.append(p.with_suffix(".json"))
    return files


def belonging_to(input_path: str) -> List[Path]:
    """The input and the files that belong to it (and must survive a run untouched): for geodata, its
    .aux.xml, .ovr, .msk and .qml style; for a shapefile, every file of its stem."""
    p = Path(input_path)
    files = [p]
    if p.suffix.lower() not in OWN_SUFFIXES:
        files += [p.with_name(p.name + ".aux.xml"), p.with_name(p.name + ".ovr"), p.with_name(p.name + ".msk"),
                  p.with_suffix(".qml")]
    if p.suffix.lower() == ".shp":
        files += [p.with_suffix(ext) for ext in SHAPEFILE_PARTS]
    return files


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _values(value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    return [str(value)] if str(value) else []


def clashes(inputs: Iterable[Tuple[str, str]], outputs: Iterable[Tuple[str, str]]) -> List[str]:
    """Messages, one per output that would overwrite an input or a file of one.

    ``inputs`` and ``outputs`` are (name shown to the user, path) pairs."""
    inputs = [(n, v) for n, v in inputs if v and not v.startswith("/vsi")]
    messages = []
    for out_name, out in outputs:
        if not out or out.startswith("/vsi"):
            continue
        for written in written_beside(out):
            hit = next(((n, v, f) for n, v in inputs for f in belonging_to(v) if _same(written, f)), None)
            if hit is None:
                continue
            in_name, in_path, in_file = hit
            what = "is the input" if _same(Path(in_path), in_file) and _same(written, Path(out)) else (
                f"would overwrite {in_file}, which belongs to the input")
            messages.append(f"{out_name} {out} {what} {in_name} {in_path}: a run never overwrites its inputs; "
                            f"choose another file for {out_name}")
            break
    return messages


def refuse_outputs_over_inputs(command: str, args) -> None:
    """Raise BdgfError naming both options when an output of ``command`` would overwrite an input."""
    outs = OUTPUT_OPTIONS.get(command)
    if not outs:
        return
    def flag(dest: str) -> str:
        return "--" + dest.replace("_", "-")
    # only values naming files count: train-baseline's --features is a choice (pixel, mean3...)
    inputs = [(flag(d), v) for d in INPUT_OPTIONS if d not in outs for v in _values(getattr(args, d, None))
              if os.path.exists(v)]
    outputs = [(flag(d), v) for d in outs for v in _values(getattr(args, d, None))]
    found = clashes(inputs, outputs)
    if found:
        raise BdgfError(found[0])
