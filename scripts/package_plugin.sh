#!/usr/bin/env bash
# Builds dist/bdgf.zip, installable with Plugins > Manage and Install Plugins > Install from ZIP.
# Top folder bdgf/ with the plugin entry point, metadata, bdgf_qgis/, bdgf_core/, resources/,
# requirements*.txt, README.md and LICENSE (when present); no .venv, tests or caches.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$REPO"
mkdir -p dist
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" - "$REPO" dist/bdgf.zip <<'PYEOF'
import os, sys, zipfile
repo, out = sys.argv[1], sys.argv[2]
wanted = ["__init__.py", "metadata.txt", "bdgf_qgis", "bdgf_core", "resources", "README.md", "LICENSE"]
wanted += sorted(n for n in os.listdir(repo) if n.startswith("requirements") and n.endswith(".txt"))
skip_dirs = {"__pycache__", ".pytest_cache", ".mypy_cache", ".hypothesis"}
tmp = out + ".tmp"
count = 0
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for name in wanted:
        path = os.path.join(repo, name)
        if os.path.isfile(path):
            z.write(path, f"bdgf/{name}"); count += 1
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("."))
                for f in sorted(files):
                    if f.endswith((".pyc", ".pyo")) or f.startswith("."):
                        continue
                    full = os.path.join(root, f)
                    z.write(full, "bdgf/" + os.path.relpath(full, repo)); count += 1
os.replace(tmp, out)
print(f"package_plugin: wrote {out} ({count} files)")
PYEOF
