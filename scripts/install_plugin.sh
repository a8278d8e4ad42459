#!/usr/bin/env bash
# Links this checkout into a QGIS profile as the plugin `bdgf` (idempotent).
#   scripts/install_plugin.sh [PROFILE_DIR]
# PROFILE_DIR defaults to ~/.local/share/QGIS/QGIS3/profiles/default. The plugin finds its
# runtime (this checkout's .venv, made by `make install`) through the link.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
profile="${1:-$HOME/.local/share/QGIS/QGIS3/profiles/default}"
plugins="$profile/python/plugins"
target="$plugins/bdgf"

mkdir -p "$plugins"
if [ -L "$target" ]; then
  current="$(readlink "$target")"
  if [ "$current" = "$REPO" ]; then
    echo "install_plugin: $target already links to $REPO; nothing to do"
  else
    ln -sfn "$REPO" "$target"
    echo "install_plugin: $target linked to $current before; now links to $REPO"
  fi
elif [ -e "$target" ]; then
  echo "install_plugin: $target exists and is not a link (an installed copy of the plugin?);" >&2
  echo "  remove it (Plugins > Manage and Install Plugins > Uninstall) and run this again" >&2
  exit 1
else
  ln -s "$REPO" "$target"
  echo "install_plugin: linked $target -> $REPO"
fi

if [ -x "$REPO/.venv/bin/python" ]; then
  echo "install_plugin: the algorithms run the runtime with $REPO/.venv/bin/python (found through the link)"
else
  echo "install_plugin: $REPO/.venv does not exist yet: run \`make install\` in $REPO, or set" \
       "Settings > Options > Processing > Providers > BDGF > BDGF_PYTHON"
fi
echo "install_plugin: restart QGIS, then enable BDGF in Plugins > Manage and Install Plugins > Installed;"
echo "  its algorithms appear in the Processing Toolbox under BDGF"
