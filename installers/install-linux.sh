#!/usr/bin/env sh
# Install Tessera into a private venv with a menu entry. Usage: install-linux.sh [PREFIX]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-"${XDG_DATA_HOME:-$HOME/.local/share}/tessera"}
python=${PYTHON:-python3}
extras=${TESSERA_EXTRAS:-gui}
spec=${TESSERA_SPEC:-"$here[$extras]"}

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    { echo "Tessera needs Python >= 3.10 (found $("$python" --version 2>&1)); set PYTHON=" >&2; exit 2; }
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --upgrade pip
"$prefix/bin/python" -m pip install "$spec"

mkdir -p "$HOME/.local/bin" "${XDG_DATA_HOME:-$HOME/.local/share}/applications"
ln -sf "$prefix/bin/tessera" "$HOME/.local/bin/tessera"
sed "s|@TESSERA@|$prefix/bin/tessera|" "$here/installers/tessera.desktop.in" \
    > "${XDG_DATA_HOME:-$HOME/.local/share}/applications/tessera.desktop"
"$prefix/bin/tessera" --version
echo "Installed. Start it from the menu or run: tessera view"
