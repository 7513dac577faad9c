#!/usr/bin/env bash
# Prepare a development / CI machine for nimbus-websocket.  Idempotent; a
# repeat run only redoes what changed.
#
#   1. system packages (root only): chromium, openssh-server, nginx, redis-server, python3-venv
#   2. .venv + requirements-dev.txt + the build backend + `pip install -e .`
#      (skipped while requirements-dev.txt / pyproject.toml are unchanged)
#   3. `npm ci` (when node_modules is missing or package-lock.json changed)
#   4. project wheel -> build/wheel/   (rebuilt when the sources changed)
#   5. offline Pyodide folder -> build/pyodide-dist/ (scripts/build_pyodide_dist.py)
#   6. the pip install set (scripts/build_wheels.py): build/site/, the page's
#      data-only wheel -> build/site-wheel/, the server extra's third-party
#      wheels -> build/wheelhouse/ (pip download, once per pin change)
#
# Environment: PYTHON (interpreter for a new venv, default python3),
#              NIMBUS_SETUP_VERBOSE=1 to see the tools' output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
VERBOSE="${NIMBUS_SETUP_VERBOSE:-0}"
START=$SECONDS

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command quietly; on failure show its output and stop.
quiet() {
    local what="$1"; shift
    if [[ "$VERBOSE" == 1 ]]; then
        "$@" || die "$what failed: $*"
        return
    fi
    local out
    out="$(mktemp)"
    if ! "$@" >"$out" 2>&1; then
        tail -n 60 "$out" >&2
        rm -f "$out"
        die "$what failed: $*"
    fi
    rm -f "$out"
}

hash_files() { cat -- "$@" | sha256sum | cut -d' ' -f1; }

# --- 1. system packages -----------------------------------------------------
apt_pkgs=()
[[ -x /usr/bin/chromium ]] || apt_pkgs+=(chromium)
[[ -x /usr/sbin/sshd ]] || apt_pkgs+=(openssh-server)
# Debian's nginx: tests/e2e/test_deploy_nginx*.py run docs/deploy.md's proxy recipe with a
# config of their own on a free port (bookworm's nginx-light is a transitional package).
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || apt_pkgs+=(nginx)
# Debian's redis-server: the cluster tests (tests/cluster/) start their own on a free port.
command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]] || apt_pkgs+=(redis-server)
if [[ ! -x "$PY" ]] && ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_pkgs+=(python3-venv)
fi
if ((${#apt_pkgs[@]})); then
    if [[ "$(id -u)" == 0 ]]; then
        log "apt-get install ${apt_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        quiet "apt-get update" apt-get update -q
        quiet "apt-get install" apt-get install -y -q "${apt_pkgs[@]}"
    else
        log "WARNING: missing system packages (${apt_pkgs[*]}); run as root or: sudo apt-get install -y ${apt_pkgs[*]}"
    fi
fi

command -v node >/dev/null 2>&1 || die "node not found (Node >= 20 is required)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node >= 20 required, found $(node --version)"

# --- 2. Python virtualenv ---------------------------------------------------
if [[ ! -x "$PY" ]]; then
    log "creating .venv"
    quiet "venv creation" "${PYTHON:-python3}" -m venv "$VENV"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die ".venv Python must be >= 3.11"

PIP_STAMP="$VENV/.nimbus-setup.sha256"
pip_hash="$( { hash_files requirements-dev.txt pyproject.toml; "$PY" -VV; } | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$PIP_STAMP" || "$(cat "$PIP_STAMP")" != "$pip_hash" ]]; then
    log "pip install -r requirements-dev.txt, build backend, -e ."
    pip=("$PY" -m pip --disable-pip-version-check -q)
    quiet "pip install requirements-dev.txt" "${pip[@]}" install -r requirements-dev.txt
    # The build backend pyproject asks for (setuptools>=77 for SPDX license
    # strings), so wheels build with --no-isolation: fast and offline.
    mapfile -t build_reqs < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["build-system"]["requires"]))')
    quiet "pip install build backend" "${pip[@]}" install "${build_reqs[@]}"
    quiet "pip install -e ." "${pip[@]}" install --no-build-isolation --no-deps -e .
    echo "$pip_hash" >"$PIP_STAMP"
else
    log "Python packages up to date"
fi

# --- 3. npm -------------------------------------------------------------------
NPM_STAMP="$ROOT/node_modules/.nimbus-lock.sha256"
npm_hash="$(hash_files package-lock.json package.json)"
if [[ ! -d node_modules || ! -f "$NPM_STAMP" || "$(cat "$NPM_STAMP")" != "$npm_hash" ]]; then
    log "npm ci"
    quiet "npm ci" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$npm_hash" >"$NPM_STAMP"
else
    log "node_modules up to date"
fi

# --- 4 + 5. project wheel and the offline Pyodide folder -----------------------
# (prints one summary line; errors go to stderr with the failing step)
"$PY" scripts/build_pyodide_dist.py --build-wheel --quiet ||
    die "assembling build/pyodide-dist failed (see above)"
log "wheel: $(cd build/wheel && ls nimbus_websocket-*.whl)  dist: build/pyodide-dist/"

# --- 6. what `pip install 'nimbus-websocket[server]'` installs, offline ----------
"$PY" scripts/build_wheels.py --quiet ||
    die "building the site wheel / wheelhouse failed (see above)"
log "site wheel: $(cd build/site-wheel && ls nimbus_websocket_site-*.whl)  wheelhouse: build/wheelhouse/"
log "done in $((SECONDS - START)) s"
