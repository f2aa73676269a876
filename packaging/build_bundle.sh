#!/usr/bin/env bash
# Builds the CPU folder bundle of WISE Workbench with PyInstaller: dist/wise-gui/wise-gui (work files in build/).
# Usage: packaging/build_bundle.sh   (or `make bundle`; the .venv must exist: `make setup`)
# Then check it: dist/wise-gui/wise-gui --version && dist/wise-gui/wise-gui smoke
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "No $PY: run 'make setup' first." >&2
    exit 1
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "Installing PyInstaller into .venv"
    "$PY" -m pip install --quiet "pyinstaller>=6.10"
fi
# The build imports torch in helper processes: one thread each is plenty, and keeps a shared machine usable.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" QT_QPA_PLATFORM=offscreen
start=$(date +%s)
"$PY" -m PyInstaller packaging/wise-gui.spec --noconfirm --clean --distpath dist --workpath build
echo "Built dist/wise-gui in $(( $(date +%s) - start )) s, $(du -sh dist/wise-gui | cut -f1)"
