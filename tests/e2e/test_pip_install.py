"""Issue 14, item 3: ``pip install 'nimbus-websocket[server]'`` then ``nimbus-ws serve`` serves the page.

From the wheels the project builds (``scripts/build_wheels.py``, run by
``make setup``; the fixture brings them up to date): the project wheel
(``build/wheel/``), the companion data-only wheel ``nimbus-websocket-site``
the ``server`` extra pins (``build/site-wheel/``) and the third-party wheels
(``build/wheelhouse/``).  Into a fresh venv under ``tmp_path``, offline
(``--no-index``, no pip configuration), then ``VENV/bin/nimbus-ws serve`` with
no ``--static``, run from ``tmp_path`` so no file of the repository is
reachable: ``GET /`` is the page, every asset it references answers 200 (the
``.wasm`` gzip-encoded), the dist's test-only wheels are not there, and
Chromium runs a command in the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

INSTALL_TIMEOUT = 120
START_TIMEOUT = 30
COMMAND_TIMEOUT_MS = 20_000


def _clean_env(home: Path) -> dict[str, str]:
    """No pip configuration, find-links or index from the machine; no repo on any path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HOME=str(home))
    return env


@pytest.fixture(scope="module")
def wheels() -> dict[str, Path]:
    """The three folders ``pip --find-links`` gets, brought up to date by ``build_wheels.py``."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_wheels
    finally:
        sys.path.pop(0)
    if not (REPO_ROOT / "build" / "pyodide-dist" / "pyodide-lock.json").is_file():
        pytest.skip("build/pyodide-dist missing: make setup")
    try:
        build_wheels.build(REPO_ROOT)
    except build_wheels.BuildError as e:
        pytest.fail(f"building the wheels failed (make setup fetches build/wheelhouse): {e}")
    build = REPO_ROOT / "build"
    return {"wheel": build / "wheel", "site": build / "site-wheel", "house": build / "wheelhouse"}


@pytest.fixture(scope="module")
def venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``nimbus-websocket[server]`` installed from the wheels only."""
    tmp = tmp_path_factory.mktemp("pip")
    venv = tmp / "venv"
    env = _clean_env(tmp)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=tmp, env=env, timeout=INSTALL_TIMEOUT)
    find_links = [a for d in wheels.values() for a in ("--find-links", str(d))]
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", *find_links, "nimbus-websocket[server]"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


class Served:
    """``VENV/bin/nimbus-ws serve`` as a subprocess; ``url`` from its ``serving`` line."""

    def __init__(self, venv: Path, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            # a shell without the user's dotfiles: what is tested is the install, not root's .bashrc
            [str(venv / "bin" / "nimbus-ws"), "serve", "--port", "0", "--pty-command", "exec bash --norc --noprofile -i"],
            cwd=cwd, env=_clean_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._seen = threading.Event()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()
        if not self._seen.wait(START_TIMEOUT) or self.url is None:
            self.stop()
            raise AssertionError("nimbus-ws serve printed no URL:\n" + "\n".join(self.lines[-30:]))

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip())
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line) if "serving" in line else None
            if m and self.url is None:
                self.url = m.group(1)
                self._seen.set()
        self._seen.set()  # EOF: the process ended

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def served(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(venv, tmp_path_factory.mktemp("cwd"))
    try:
        yield s
    finally:
        s.stop()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_installed_page_is_the_default_static_dir(venv: Path) -> None:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from nimbus_websocket.node_runtime.server.static import default_static_dir; print(default_static_dir())"],
        cwd=venv.parent, env=_clean_env(venv.parent), capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(out).is_relative_to(venv) and out.endswith("nimbus_websocket_site/site"), out


def test_every_asset_of_the_page_is_served(served: Served) -> None:
    assert served.url is not None
    status, headers, page = fetch(served.url)
    assert status == 200 and headers["content-type"].startswith("text/html"), (status, headers)
    html = page.decode()
    assert "<title>nimbus terminal</title>" in html
    refs = set(re.findall(r'(?:src|href)="([^"#:]+)"', html))
    status, _, site_json = fetch(served.url + "site.json")
    assert status == 200
    meta = json.loads(site_json)
    app, runtime = meta["app"], meta["runtime"]
    assert {f"{app}vendor/xterm/xterm.js", f"{app}vendor/xterm/xterm.css", f"{app}app.mjs", f"{app}style.css"} <= refs, refs
    refs |= {meta["wheel"], meta["facade"], f"{app}nimbus_adapter.mjs", f"{runtime}pyodide-lock.json"}
    refs |= {f"{runtime}{n}" for n in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")}
    for ref in sorted(refs):
        status, headers, body = fetch(served.url + ref)
        assert status == 200 and body, ref
        assert headers.get("etag") and headers.get("last-modified"), (ref, headers)
        assert headers["cache-control"] == "public, max-age=31536000, immutable", (ref, headers)
    status, headers, body = fetch(served.url + f"{runtime}pyodide.asm.wasm", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip" and body[:2] == b"\x1f\x8b"
    status, headers, body = fetch(served.url + f"{runtime}pyodide.asm.wasm", {"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers.get("content-encoding") == "br", headers
    # Only what the page loads: the dist's test-only wheels are not shipped.
    dist = REPO_ROOT / "build" / "pyodide-dist"
    for extra in sorted(p.name for p in dist.glob("*.whl") if not p.name.startswith("nimbus_websocket-")):
        assert fetch(served.url + f"{runtime}{extra}")[0] == 404, extra


def test_a_command_runs_in_the_installed_page(served: Served, context: Any) -> None:
    assert served.url is not None
    demo = Demo(context.new_page()).open(served.url)
    demo.wait_ready()
    # The default PTY command is the user's login shell (rc files and all): a generous wait.
    demo.run("echo pip-$((6*7))", r"^pip-42$", timeout=COMMAND_TIMEOUT_MS)
