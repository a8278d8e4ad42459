"""Run the fault suite (tests/test_faults.py) and write its figures to docs/FAULTS.md.

    .venv/bin/python scripts/fault_report.py [--out docs/FAULTS.md] [-- PYTEST_ARGS...]

Each test of the suite adds rows (fault, stage, tries, outputs intact, stray processes) to a file
named by BDGF_FAULTS_RECORD; this script runs pytest with it and renders the table. A failing
test still gives its row (recorded before its assertions), and the script's exit status is pytest's.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render(rows: list[dict], seconds: float, code: int, command: str, updates: list[str] = ()) -> str:
    tried = sum(r["tried"] for r in rows)
    intact = sum(r["intact"] for r in rows)
    strays = sum(r["strays"] for r in rows)
    lines = [
        "# Faults survived (issue 18)",
        "",
        f"Written by `{command}` on {_dt.date.today().isoformat()} ({platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}); the suite took {seconds:.0f} s"
        f"{'' if code == 0 else f' and FAILED (pytest exit status {code})'}."
        + "".join(f" Then {u}." for u in updates),
        "",
        f"**{tried} faults tried, outputs intact after {intact}, {strays} stray processes left.**",
        "",
        "What is checked (tests/test_faults.py): *outputs intact* means every output under its final name is",
        "absent, the previous file or the complete output of an uninterrupted run (equal arrays and weights),",
        "what a cancel keeps (the checkpoint) is there, and no partial file is left once the next run of the",
        "same outputs has run. *Stray processes*: processes of the run (found by an environment tag they all",
        "inherit, torchrun's agent and workers included) alive 20 s after the fault.",
        "",
        "| fault | stage | tries | outputs intact | stray processes | seconds | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        # the tests' temporary folders are noise in a table
        note = re.sub(r"\S*/pytest-of-[^/]+/pytest-\d+/[^/]+/", "", str(r.get("note", ""))).replace("|", "/")
        lines.append(f"| {r['fault']} | {r['stage']} | {r['tried']} | {r['intact']} | {r['strays']} | "
                     f"{r['seconds']:.1f} | {note} |")
    lines += [
        "",
        "How each fault is made:",
        "",
        "- *parent killed*: a parent process runs the runtime through the plugin's own bridge",
        "  (`bdgf_qgis.runtime.run_process`, as QGIS does) and is killed with SIGTERM or SIGKILL once the stage",
        "  reports progress; the runtime sees its stdin pipe close (and, on Linux, the parent-death signal) and",
        "  cancels (bdgf_core/lifeline.py). torchrun: the workers watch the same pipe; the agent ends with them.",
        "- *disk full (file-size limit)*: RLIMIT_FSIZE is lowered as the named file starts being written, so",
        "  the real write (GDAL, safetensors) fails; *disk full (64 KB file system)*: a real tmpfs (root only).",
        "- *SIGKILL at random moments*: seeded moments, one in each twentieth of an uninterrupted run, each",
        "  followed by a rerun of the same command (runs forked from a warm process with torch loaded, to fit",
        "  CI); the previous outputs are placeholder files, which must survive or be replaced whole.",
        "- *two runs at once*: the second run of the same outputs (or the same checkpoint) is refused with a",
        "  message while the first completes; runs with different outputs in one folder both complete.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "FAULTS.md"))
    ap.add_argument("--rows", default=None, help="keep the recorded rows in this file (JSON lines)")
    ap.add_argument("--from-rows", default=None, help="render rows recorded earlier, without running the suite")
    ap.add_argument("--update", action="store_true",
                    help="with --rows: run only the tests PYTEST_ARGS select (e.g. -k pretrain) and replace their "
                         "rows in that file")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args(argv)
    from bdgf_core.atomic import atomic_output

    if args.from_rows:
        lines = Path(args.from_rows).read_text().splitlines()
        meta, rows = json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
        seconds, code = meta["seconds"], meta["code"]
        updates = meta.get("updates", [])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rec = Path(tmp) / "rows.jsonl"
            env = dict(os.environ, BDGF_FAULTS_RECORD=str(rec), QT_QPA_PLATFORM="offscreen")
            t0 = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    str(ROOT / "tests" / "test_faults.py"), *args.pytest_args], cwd=ROOT, env=env)
            seconds = time.monotonic() - t0
            rows = [json.loads(x) for x in rec.read_text().splitlines()] if rec.exists() else []
        if args.update:
            lines = Path(args.rows).read_text().splitlines()
            meta, old = json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
            fresh = {(r["fault"], r["stage"]): r for r in rows}
            n_fresh = len(fresh)
            rows = [fresh.pop((r["fault"], r["stage"]), r) for r in old] + list(fresh.values())
            updates = meta.get("updates", []) + [
                f"{n_fresh} rows re-run on "
                f"{_dt.date.today().isoformat()} with `{' '.join(args.pytest_args)}` ({time.monotonic() - t0:.0f} s)"]
            seconds, code = meta["seconds"], max(meta["code"], code)
        else:
            updates = []
        if args.rows:
            Path(args.rows).write_text("\n".join(json.dumps(x) for x in
                                                [{"seconds": seconds, "code": code, "updates": updates}, *rows]) + "\n")
    text = render(rows, seconds, code, "python scripts/fault_report.py", updates)
    with atomic_output(args.out) as part:
        part.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(rows)} rows")
    return code


if __name__ == "__main__":
    sys.exit(main())
