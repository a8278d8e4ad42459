#!/usr/bin/env bash
# qgis_process with the BDGF plugin loaded from this checkout, in a private QGIS profile.
# Call it exactly like qgis_process:
#   scripts/qgis_process.sh list
#   scripts/qgis_process.sh help bdgf:classify
#   scripts/qgis_process.sh run bdgf:classify -- MODEL=m.bdgf SPECTRAL=s.tif SAR=r.tif OUTPUT=map.tif
# Environment:
#   BDGF_QGIS_PROFILE   profile folder (QGIS_CUSTOM_CONFIG_PATH); default <repo>/build/qgis-profile
#   QGIS_PROCESS        the qgis_process executable to use (default: qgis_process.bin when present,
#                       since Debian 12's /usr/bin/qgis_process wrapper passes an option the binary
#                       rejects, else qgis_process)
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"

qp="${QGIS_PROCESS:-}"
if [ -z "$qp" ]; then
  if [ -x /usr/bin/qgis_process.bin ]; then qp=/usr/bin/qgis_process.bin
  elif command -v qgis_process.bin >/dev/null 2>&1; then qp="$(command -v qgis_process.bin)"
  elif command -v qgis_process >/dev/null 2>&1; then qp="$(command -v qgis_process)"
  else echo "qgis_process.sh: qgis_process was not found; install QGIS (scripts/setup.sh)" >&2; exit 127
  fi
fi

# No display: Qt must not try to open one.
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
fi
# qgis_process's embedded Python takes its environment from the first python3 on PATH.
if [ -x "$REPO/.venv/bin/python3" ]; then
  export PATH="$REPO/.venv/bin:$PATH"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true

# QGIS loads a plugin from a folder named like the plugin: build/plugins/bdgf -> the repository.
plugins="$REPO/build/plugins"
mkdir -p "$plugins"
if [ "$(readlink "$plugins/bdgf" 2>/dev/null || true)" != "$REPO" ]; then
  rm -f "$plugins/bdgf"
  ln -s "$REPO" "$plugins/bdgf"
fi
export QGIS_PLUGINPATH="$plugins${QGIS_PLUGINPATH:+:$QGIS_PLUGINPATH}"

# A private profile in which the plugin is enabled (idempotent; `plugins enable` is not: it
# exits 1 when the plugin is already enabled).
profile="${BDGF_QGIS_PROFILE:-$REPO/build/qgis-profile}"
export QGIS_CUSTOM_CONFIG_PATH="$profile"
ini="$profile/profiles/default/QGIS/QGIS3.ini"
mkdir -p "$(dirname "$ini")"
if ! grep -qx 'bdgf=true' "$ini" 2>/dev/null; then
  tmp="$ini.bdgf$$"
  if [ -f "$ini" ] && grep -qx '\[PythonPlugins\]' "$ini"; then
    awk '
      /^\[/ { if (insec && !done) { print "bdgf=true"; done = 1 } insec = ($0 == "[PythonPlugins]") }
      insec && /^bdgf=/ { if (!done) { print "bdgf=true"; done = 1 } next }
      { print }
      END { if (insec && !done) print "bdgf=true" }
    ' "$ini" > "$tmp"
  else
    { [ -f "$ini" ] && cat "$ini" && echo; printf '[PythonPlugins]\nbdgf=true\n'; } > "$tmp"
  fi
  mv "$tmp" "$ini"
fi

exec "$qp" "$@"
