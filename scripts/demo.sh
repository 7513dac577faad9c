#!/usr/bin/env bash
# Serve the demo terminal page: `make demo` / `bash scripts/demo.sh [nimbus-ws serve options]`.
#
#   1. scripts/setup.sh       (.venv, node_modules, wheel, build/pyodide-dist; idempotent)
#   2. scripts/build_site.py  (build/site: page, xterm.js, facade, Pyodide; idempotent)
#   3. nimbus-ws serve --static build/site "$@"   (prints the page URL)
#
# Defaults: http://127.0.0.1:8765/, local PTY backend (your login shell).
# Examples:
#   bash scripts/demo.sh --port 9000
#   bash scripts/demo.sh --pty-command 'exec bash --norc -i'
#   bash scripts/demo.sh --backend ssh --known-hosts ~/.ssh/known_hosts
#       then open http://127.0.0.1:8765/?target=127.0.0.1:22&user=$USER
#   bash scripts/demo.sh --token s3cret      then open .../?token=s3cret
# Environment: NIMBUS_SKIP_SETUP=1 skips step 1 (e.g. a second demo on another port).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "${NIMBUS_SKIP_SETUP:-0}" != 1 ]]; then
    bash scripts/setup.sh
fi
.venv/bin/python scripts/build_site.py
exec .venv/bin/nimbus-ws serve --static build/site "$@"
