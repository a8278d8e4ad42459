#!/usr/bin/env bash
# Installs what the runtime and the tests need, idempotently and without questions:
#   1. Debian packages for QGIS and GDAL (only those missing; apt-get update only when needed),
#   2. a virtual environment .venv on the system Python with its site packages,
#   3. pip packages from requirements.txt, numpy pinned to Debian's.
# A second run with everything present installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv python3-scipy"
SYS_PY=/usr/bin/python3
VENV=.venv

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV on $SYS_PY (with system site packages)"
  "$SYS_PY" -m venv --system-site-packages "$VENV"
fi

# The checkout itself is on the venv's path: `python -m bdgf_core` works from any folder.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ "$(cat "$site/bdgf.pth" 2>/dev/null)" = "$PWD" ] || echo "$PWD" > "$site/bdgf.pth"

# Keep numpy exactly at the version Debian's GDAL/QGIS bindings were built against.
sys_numpy=$("$SYS_PY" -c 'import numpy; print(numpy.__version__)')
echo "numpy==$sys_numpy" > "$VENV/constraints.new"
stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt "$VENV/constraints.new" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pip packages into $VENV"
  mv "$VENV/constraints.new" "$VENV/constraints.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c "$VENV/constraints.txt" -r requirements.txt
  "$VENV/bin/python" -c 'import torch, numpy, sklearn, safetensors; from osgeo import gdal, gdal_array; import qgis.core' \
      || { echo "setup: the environment does not import; see the messages above" >&2; exit 1; }
  echo "$want" > "$stamp"
else
  rm -f "$VENV/constraints.new"
fi
