#!/usr/bin/env bash
# Adds WISE Workbench to the current user's application menu: the desktop entry (pointing at the bundle,
# or at `wise-gui` on PATH), the icon at every size, and the AppStream metainfo, under $XDG_DATA_HOME.
# Usage: packaging/linux/install-user.sh [PATH/TO/dist/wise-gui/wise-gui]      Undo: the same with --remove
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ID=io.github.wisegui.WiseWorkbench
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
SIZES="16 32 48 64 128 256"

if [ "${1:-}" = "--remove" ]; then
    rm -f "$DATA/applications/$ID.desktop" "$DATA/metainfo/$ID.metainfo.xml" "$DATA/icons/hicolor/scalable/apps/$ID.svg"
    for s in $SIZES; do rm -f "$DATA/icons/hicolor/${s}x${s}/apps/$ID.png"; done
    exit 0
fi
EXEC="${1:-wise-gui}"
if [ "$EXEC" != wise-gui ]; then
    EXEC="$(cd "$(dirname "$EXEC")" && pwd)/$(basename "$EXEC")"
    [ -x "$EXEC" ] || { echo "not an executable: $EXEC" >&2; exit 1; }
fi
mkdir -p "$DATA/applications" "$DATA/metainfo" "$DATA/icons/hicolor/scalable/apps"
sed -e "s|^Exec=wise-gui|Exec=\"$EXEC\"|" -e "s|^TryExec=wise-gui|TryExec=$EXEC|" \
    "$HERE/$ID.desktop" > "$DATA/applications/$ID.desktop"
cp "$HERE/$ID.metainfo.xml" "$DATA/metainfo/"
cp "$ROOT/resources/icons/wise-gui.svg" "$DATA/icons/hicolor/scalable/apps/$ID.svg"
for s in $SIZES; do
    mkdir -p "$DATA/icons/hicolor/${s}x${s}/apps"
    cp "$ROOT/resources/icons/wise-gui-$s.png" "$DATA/icons/hicolor/${s}x${s}/apps/$ID.png"
done
command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA/applications" || true
echo "Installed $ID for $EXEC under $DATA"
