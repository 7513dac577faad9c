#!/usr/bin/env bash
# mypy --strict over the three installed packages, as installed.
#
# The sources live in core/, web_runtime/ and node_runtime/ but install as
# nimbus_websocket.core / .web_runtime / .node_runtime (pyproject.toml
# package-dir), and the runtimes import the core relatively ("...core").  mypy
# resolves packages from folders, so this lays out the installed tree with
# symlinks under build/typecheck/ and checks the package there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
TREE="$ROOT/build/typecheck"
PKG="$TREE/nimbus_websocket"
rm -rf "$TREE"
mkdir -p "$PKG"
for f in nimbus_websocket/*.py nimbus_websocket/py.typed; do
    ln -s "$ROOT/$f" "$PKG/$(basename "$f")"
done
ln -s "$ROOT/core" "$PKG/core"
ln -s "$ROOT/web_runtime" "$PKG/web_runtime"
ln -s "$ROOT/node_runtime" "$PKG/node_runtime"
cd "$TREE"
exec "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" --strict -p nimbus_websocket "$@"
