"""Run the benchmarks of benchmarks/ and write the index docs/BENCHMARKS.md (``make bench``).

    python benchmarks/run_all.py                 # every benchmark at its full settings (hours on 2 cores)
    python benchmarks/run_all.py --quick         # a smoke run: small settings, in a sandbox, docs untouched
    python benchmarks/run_all.py --only classify branches   # some of them (names: --list)
    python benchmarks/run_all.py --index-only    # only rewrite docs/BENCHMARKS.md from docs/bench/*.md
    python benchmarks/run_all.py --list          # the benchmarks, their full and quick command lines

Full runs write their results into docs/bench/ (each script writes its own .md, with the command line
that produced it) and then the index. Benchmarks on the real data sets of ../shared/data are skipped,
with the reason printed, when those data are absent.

``--quick`` runs each benchmark with small settings in a sandbox (build/bench_quick/root: copies of
benchmarks/ and docs/bench/, a link to bdgf_core), so that its figures never overwrite the published
ones; its index goes to build/bench_quick/root/docs/BENCHMARKS.md. It checks that the scripts run, not
what they measure.

The index lists, for each docs/bench/*.md, its title, the command line(s) it records, its machine
line and its headline figures, all parsed from the file (the bold figures of its text, else the first
rows of its first table): nothing in it is written by hand.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@dataclass
class Bench:
    name: str
    script: str
    full: list[str]
    quick: list[str] | None  # None: not run by --quick (the reason in ``skip_quick``)
    needs: str | None = None  # a data set under ../shared/data
    env: dict[str, str] = field(default_factory=dict)
    skip_quick: str = ""
    work: bool = True  # the script takes --work (the sandbox's work folder in --quick)


ONE = {"OMP_NUM_THREADS": "1"}

#: Full settings: the ones the published docs/bench files were written with (their command lines).
BENCHES = [
    Bench("classify", "bench_classify.py", ["--repeats", "3", "--scale-repeats", "1", "--strip-rows", "4"],
          ["--quick"], env=ONE),
    Bench("branches", "bench_branches.py", ["--threads", "1", "--repeats", "7"],
          ["--threads", "1", "--repeats", "1", "--warmup", "0"], env=ONE, work=False),
    Bench("diffusion", "bench_diffusion.py", [], ["--big", "400"], env=ONE),
    Bench("linear-probe", "linear_probe.py", [], ["--seeds", "0", "--split-seeds", "0"], env=ONE),
    Bench("profiles-sweep", "bench_profiles.py", ["sweep"], None, env=ONE,
          skip_quick="the sweep trains two 300-step diffusion models; no small setting"),
    Bench("profiles-timing", "bench_profiles.py", ["timing"], None, env=ONE,
          skip_quick="times both profiles on a 1000 x 1000 scene; no small setting"),
    Bench("profiles-accuracy", "bench_profiles.py", ["accuracy"], ["accuracy", "--epochs", "1", "--seeds", "0"],
          env=ONE),
    Bench("profiles-render", "bench_profiles.py", ["render"], ["render"], work=False),
    Bench("bdgf-scene", "bench_bdgf.py", ["--epochs", "15", "--part", "scene", "--out", "docs/bench/bdgf_scene.md"],
          ["--epochs", "1", "--seeds", "0", "--part", "scene", "--out", "docs/bench/bdgf_scene.md"], env=ONE, work=False),
    Bench("bdgf-houston", "bench_bdgf.py", ["--epochs", "30", "--part", "houston", "--out", "docs/bench/bdgf_houston.md"],
          ["--epochs", "1", "--seeds", "0", "--part", "houston", "--out", "docs/bench/bdgf_houston.md"],
          needs="houston2013", env=ONE, work=False),
    Bench("bdgf-houston-splits", "bench_bdgf.py",
          ["--epochs", "30", "--part", "houston-splits", "--out", "docs/bench/bdgf_houston_splits.md"],
          ["--epochs", "1", "--seeds", "0", "--part", "houston-splits", "--out", "docs/bench/bdgf_houston_splits.md"],
          needs="houston2013", env=ONE, work=False),
    Bench("scaling", "bench_scaling.py", ["--repeats", "2", "--size", "48", "--map-tiles", "2"],
          ["--repeats", "1", "--size", "32", "--map-tiles", "1"]),
    Bench("evaluation", "bench_evaluation.py", ["--repeats", "3"],
          ["--repeats", "1", "--epochs", "1", "--draws", "10", "--hard-epochs", "1"], env={"OMP_NUM_THREADS": "2"}),
    Bench("compile", "bench_compile.py", ["--repeats", "5"], ["--repeats", "1"], env=ONE, work=False),
    Bench("splits", "bench_splits.py", ["--seeds", "5", "--samples", "50", "--trees", "200"],
          ["--seeds", "1", "--trees", "10"], needs="houston2013", env=ONE, work=False),
]


def command(b: Bench, quick: bool, root: Path, work: Path | None) -> list[str]:
    args = list(b.quick if quick else b.full)
    if quick and b.work and work is not None:
        args += ["--work", str(work / b.name)]
    return [sys.executable, str(root / "benchmarks" / b.script), *args]


def sandbox(base: Path) -> Path:
    """A copy of benchmarks/ and docs/bench/ with a link to bdgf_core: the scripts write there."""
    root = base / "root"
    if root.exists():
        shutil.rmtree(root)
    (root / "docs").mkdir(parents=True)
    shutil.copytree(ROOT / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docs" / "bench", root / "docs" / "bench")
    (root / "bdgf_core").symlink_to(ROOT / "bdgf_core")
    shared = base / "shared"  # the scripts look for ../shared/data beside their root
    if SHARED.parent.is_dir() and not shared.exists():
        shared.symlink_to(SHARED.parent)
    return root


def run(benches: list[Bench], quick: bool) -> list[tuple[str, str]]:
    base = ROOT / "build" / "bench_quick"
    root = sandbox(base) if quick else ROOT
    work = base / "work" if quick else None
    done: list[tuple[str, str]] = []
    for b in benches:
        if b.needs and not (SHARED / b.needs).is_dir():
            msg = f"skipped: needs the real data set ../shared/data/{b.needs}, absent here"
            print(f"[{b.name}] {msg}", flush=True)
            done.append((b.name, msg))
            continue
        if quick and b.quick is None:
            msg = f"skipped in --quick: {b.skip_quick}"
            print(f"[{b.name}] {msg}", flush=True)
            done.append((b.name, msg))
            continue
        cmd = command(b, quick, root, work)
        env = {**os.environ, **b.env}
        shown = " ".join(f"{k}={v}" for k, v in b.env.items()) + f" python benchmarks/{b.script} " + " ".join(cmd[2:])
        print(f"[{b.name}] {shown.strip()}", flush=True)
        t, c = time.perf_counter(), os.times()
        p = subprocess.run(cmd, cwd=root, env=env)
        c2 = os.times()
        cpu = (c2.children_user - c.children_user) + (c2.children_system - c.children_system)
        msg = f"{'ok' if p.returncode == 0 else f'FAILED (exit {p.returncode})'}: {time.perf_counter() - t:.0f} s wall, {cpu:.0f} s CPU"
        print(f"[{b.name}] {msg}", flush=True)
        done.append((b.name, msg))
    write_index(root / "docs")
    print(f"index: {root / 'docs' / 'BENCHMARKS.md'}")
    return done


# ---------------------------------------------------------------------------------------------
# The index, parsed from docs/bench/*.md

BOLD = re.compile(r"\*\*([^*]+)\*\*")
COMMAND = re.compile(r"((?:[A-Z_]+=\S+ )*[\w./-]*python[\w.]* benchmarks/[\w.]+\.py[^`\n]*)")
SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z(`])")
FIRST_SENTENCE = re.compile(r"(?<=\.)\s+(?=[A-Z*])")


def _plain(s: str, limit: int = 260) -> str:
    s = s.strip()
    s = s[2:] if s.startswith("- ") else s
    if len(s) <= limit:
        return s
    i = s.find("**")  # keep the first bold figure in view
    start = 0 if i < limit - 40 else i - 120
    return ("…" if start else "") + s[start:start + limit - 1].rstrip() + "…"


def summarise(md: Path) -> dict:
    text = md.read_text(encoding="utf-8")
    lines = text.splitlines()
    title = next((x[2:].strip() for x in lines if x.startswith("# ")), md.stem)
    cmds = list(dict.fromkeys(m.group(1).strip().rstrip(".;,") for m in COMMAND.finditer(text)))
    machine = next((x for x in lines if x.startswith("Machine:")), "")
    machine = FIRST_SENTENCE.split(machine)[0] if machine else ""
    heads = []
    for x in lines:
        if x.startswith("|") or x.startswith("#"):
            continue
        for sent in SENTENCE.split(x):
            if any(any(ch.isdigit() for ch in m.group(1)) for m in BOLD.finditer(sent)):
                heads.append(_plain(sent))
    table: list[str] = []
    if not heads:  # the first rows of the first table
        for i, x in enumerate(lines):
            if x.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
                table = [x, lines[i + 1]] + [y for y in lines[i + 2:i + 5] if y.startswith("|")]
                break
    return {"title": title, "commands": cmds, "machine": machine, "headlines": list(dict.fromkeys(heads))[:12],
            "table": table}


def write_index(docs: Path) -> Path:
    files = sorted((docs / "bench").glob("*.md"))
    L = ["# Benchmarks", "",
         "Generated by `python benchmarks/run_all.py` (`make bench`; `--index-only` rewrites this page without "
         "running anything) from the files in docs/bench/: their titles, the command lines they record, their "
         "machine lines and their headline figures (the figures they print in bold, else the first rows of their "
         "first table). Each file says how its figures were measured; read it before quoting one. Do not edit "
         "this page by hand.", "",
         "`make bench` runs every benchmark at its full settings (hours on 2 CPU cores) and rewrites docs/bench/; "
         "`python benchmarks/run_all.py --quick` is a smoke run in a sandbox (build/bench_quick/) that leaves "
         "docs/ alone; `--list` shows each benchmark's full and quick command lines. Benchmarks on the real data "
         "sets (../shared/data) are skipped, with the reason printed, when the data are absent.", ""]
    for md in files:
        s = summarise(md)
        L += [f"## [{s['title']}](bench/{md.name})", "", f"File: `docs/bench/{md.name}`"]
        if s["commands"]:
            L += ["", "Command line(s):", ""] + [f"- `{c}`" for c in s["commands"]]
        else:
            L += ["", "Command line(s): none recorded in the file."]
        if s["machine"]:
            L += ["", _plain(s["machine"], 300)]
        if s["headlines"]:
            L += ["", "Headline figures:", ""] + [f"- {h}" for h in s["headlines"]]
        elif s["table"]:
            L += ["", "First rows of its first table:", ""] + s["table"]
        L.append("")
    out = docs / "BENCHMARKS.md"
    out.write_text("\n".join(L), encoding="utf-8")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small settings, in a sandbox; docs/ untouched")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (see --list)")
    ap.add_argument("--index-only", action="store_true", help="only rewrite docs/BENCHMARKS.md")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and their command lines")
    args = ap.parse_args()
    if args.list:
        for b in BENCHES:
            env = " ".join(f"{k}={v}" for k, v in b.env.items())
            q = " ".join(b.quick) if b.quick is not None else f"(not run: {b.skip_quick})"
            need = f"  [needs ../shared/data/{b.needs}]" if b.needs else ""
            print(f"{b.name}{need}\n  full:  {env} python benchmarks/{b.script} {' '.join(b.full)}\n"
                  f"  quick: {env} python benchmarks/{b.script} {q}")
        return 0
    if args.index_only:
        print(write_index(ROOT / "docs"))
        return 0
    benches = BENCHES
    if args.only:
        names = {b.name for b in BENCHES}
        bad = set(args.only) - names
        if bad:
            ap.error(f"unknown benchmarks {sorted(bad)}; known: {', '.join(sorted(names))}")
        benches = [b for b in BENCHES if b.name in args.only]
    done = run(benches, args.quick)
    print("\nsummary:")
    for name, msg in done:
        print(f"  {name}: {msg}")
    return 1 if any("FAILED" in m for _, m in done) else 0


if __name__ == "__main__":
    sys.exit(main())
