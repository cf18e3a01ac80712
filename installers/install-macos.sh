#!/usr/bin/env sh
# Install Tessera into a private venv with a Desktop launcher. Usage: install-macos.sh [PREFIX]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-"$HOME/Library/Application Support/Tessera"}
python=${PYTHON:-python3}
extras=${TESSERA_EXTRAS:-gui}
spec=${TESSERA_SPEC:-"$here[$extras]"}

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    { echo "Tessera needs Python >= 3.10; install it from python.org and retry" >&2; exit 2; }
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --upgrade pip
"$prefix/bin/python" -m pip install "$spec"
mkdir -p "$HOME/.local/bin"
ln -sf "$prefix/bin/tessera" "$HOME/.local/bin/tessera"
launcher="$HOME/Desktop/Tessera.command"
printf '#!/bin/sh\nexec "%s" view "$@"\n' "$prefix/bin/tessera" > "$launcher"
chmod +x "$launcher"
"$prefix/bin/tessera" --version
echo "Installed. Double-click Tessera.command on the Desktop, or run: tessera view"
