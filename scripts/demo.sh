#!/usr/bin/env bash
# Serve the demo: `make demo` / `bash scripts/demo.sh [nimbus-ws serve options]`.
# TODO(demo): build the static demo site (xterm.js + Pyodide from
# build/pyodide-dist + the wheel) into build/site and pass `--static build/site`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/nimbus-ws serve "$@"
