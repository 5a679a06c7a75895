#!/usr/bin/env bash
# The plugin's screenshots from the real QGIS application in an X server (Xvfb), fresh profile, clicks only.
# Needs: qgis, xvfb (apt-get install -y --no-install-recommends xvfb xauth), the checkout's .venv (make env).
# Usage: bash docs/qgis_window_shots.sh RASTER [OUT_FOLDER]   (writes dialog.png, qgis-window-vegas.jpg, qgis-window-runs.jpg)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
profiles="$(mktemp -d)"
trap 'rm -rf "$profiles"' EXIT
export SHOT_REPO="$here" SHOT_RASTER="$(realpath "$1")" SHOT_OUT="$(realpath "${2:-$here/docs}")"
timeout 900 xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck --noplugins \
  --profiles-path "$profiles" --code "$here/docs/qgis_window_shots.py" 2>&1 | grep -v -E "XDG_RUNTIME_DIR|setapi"
