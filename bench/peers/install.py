"""Install the peers under ``build/bench-peers/`` (cached: nothing is done when present).

* ``build/bench-peers/venv``: ``python -m venv`` + ``pip install`` of the
  pinned PyPI peers (terminado's server side runs there; webssh's ``wssh``);
* ``build/bench-peers/node``: ``npm install --prefix`` of wetty.

Nothing here touches the project's own ``.venv`` or ``node_modules``.  A
failed install is returned as a one-line reason, so the peer is reported as
"failed to start", never silently dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / "build" / "bench-peers"
VENV = PEERS_DIR / "venv"
NODE_PREFIX = PEERS_DIR / "node"
PY_PEERS = ("terminado==0.18.1", "webssh==1.6.3")
NPM_PEERS = ("wetty@3.2.0",)
WETTY_MAIN = NODE_PREFIX / "node_modules" / "wetty" / "build" / "main.js"
INSTALL_TIMEOUT = 600.0


def venv_python() -> Path:
    """The peers venv's interpreter."""
    return VENV / "bin" / "python"


def wssh() -> Path:
    """webssh's server entry point in the peers venv."""
    return VENV / "bin" / "wssh"


def _stamp(where: Path) -> Path:
    return where / ".installed"


def _tail(out: subprocess.CompletedProcess[str]) -> str:
    text = (out.stderr or "") + (out.stdout or "")
    lines = [x for x in text.strip().splitlines() if x.strip() and "WARNING: Location" not in x]
    return lines[-1][:200] if lines else f"exit status {out.returncode}"


def ensure_python_peers() -> str | None:
    """Create the venv and install terminado + webssh; ``None`` or why it failed."""
    want = " ".join(PY_PEERS)
    stamp = _stamp(VENV)
    if stamp.exists() and stamp.read_text().strip() == want and venv_python().exists() and wssh().exists():
        return None
    try:
        if not venv_python().exists():
            out = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True,
                                 timeout=INSTALL_TIMEOUT)
            if out.returncode != 0:
                return f"python -m venv failed: {_tail(out)}"
        out = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", *PY_PEERS], capture_output=True,
                             text=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pip install failed: {exc}"[:200]
    if out.returncode != 0:
        return f"pip install {want} failed: {_tail(out)}"
    stamp.write_text(want + "\n")
    return None


def ensure_wetty() -> str | None:
    """``npm install --prefix build/bench-peers/node wetty@3.2.0``; ``None`` or why it failed."""
    want = " ".join(NPM_PEERS)
    stamp = _stamp(NODE_PREFIX)
    if stamp.exists() and stamp.read_text().strip() == want and WETTY_MAIN.exists():
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node/npm not found"
    NODE_PREFIX.mkdir(parents=True, exist_ok=True)
    try:
        # node-pty's install script compiles its addon (node-gyp against the local Node headers).
        out = subprocess.run([npm, "install", "--prefix", str(NODE_PREFIX), "--no-audit", "--no-fund", *NPM_PEERS],
                             capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                             env={**os.environ, "npm_config_update_notifier": "false"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed: {exc}"[:200]
    if out.returncode != 0 or not WETTY_MAIN.exists():
        return f"npm install {want} failed: {_tail(out)}"
    stamp.write_text(want + "\n")
    return None


def ensure_all() -> dict[str, str | None]:
    """Install what is missing; per peer ``None`` (ready) or the reason it is not."""
    py = ensure_python_peers()
    node = ensure_wetty()
    return {"terminado": py, "webssh": py, "wetty": node}


if __name__ == "__main__":
    print(ensure_all())
