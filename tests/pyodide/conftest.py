"""pytest-pyodide, offline: Debian Chromium through Playwright, Node, and the project wheel.

Run (``make test`` does this)::

    pytest --dist-dir=build/pyodide-dist --runtime=node,chrome --runner=playwright

Host tests elsewhere in ``tests/`` run normally in the same invocation; only
tests that use a ``selenium*`` fixture (or ``@run_in_pyodide``) are run once
per Pyodide runtime.

What this file adds to pytest-pyodide:

* ``playwright_browsers`` launches ``/usr/bin/chromium`` (``$NIMBUS_CHROMIUM``)
  instead of a Playwright-downloaded browser, lazily, and never for ``node``;
* Chromium flags that keep it off the network; Node gets a global
  ``WebSocket`` (``--experimental-websocket`` on Node 20/21) and the
  ``WebSocket``/``Blob`` globals are copied into pytest-pyodide's vm context;
* without ``--runner`` the runner is ``playwright``; without ``--dist-dir`` the
  folder defaults to ``build/pyodide-dist``; if the
  folder (or Chromium, for ``chrome``) is missing the tests are *skipped* with
  a hint to run ``make setup``;
* ``selenium_nimbus``: the ``selenium`` fixture with ``nimbus_websocket``
  installed. Write Pyodide tests as::

      from pytest_pyodide import run_in_pyodide

      @run_in_pyodide
      def test_something(selenium_nimbus):
          from nimbus_websocket.core import ...
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_pyodide import get_global_config
from pytest_pyodide.hook import pytest_wrapper

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIST_DIR = REPO_ROOT / "build" / "pyodide-dist"
PROJECT_PACKAGE = "nimbus-websocket"  # its entry in the dist's pyodide-lock.json
CHROMIUM = os.environ.get("NIMBUS_CHROMIUM", "/usr/bin/chromium")

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--js-flags=--expose-gc",  # pytest-pyodide's default chrome flag
]
NODE_EXTRA_GLOBALS = ["WebSocket", "Blob"]

# pytest-pyodide's web server is http.server: without /etc/mime.types Python
# 3.11 serves .mjs as application/octet-stream (module load fails) and a
# wrong .wasm type makes Pyodide hang. The server process is forked, so it
# inherits these registrations.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")


def _node_flags() -> list[str]:
    node = shutil.which("node")
    if node is None:
        return []
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout
        major = int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    # Node >= 22 has a global WebSocket; 20/21 need the flag.
    return ["--experimental-websocket"] if major < 22 else []


def _configure_runtimes() -> None:
    cfg = get_global_config()
    cfg.set_flags("chrome", list(CHROME_FLAGS))
    cfg.set_flags("node", _node_flags())
    missing = [g for g in NODE_EXTRA_GLOBALS if g not in cfg.get_node_extra_globals()]
    cfg.add_node_extra_globals(missing)


_configure_runtimes()


def _dist_dir(config: pytest.Config) -> Path:
    return Path(config.option.dist_dir)


def _dist_ready(dist: Path) -> bool:
    return (dist / "pyodide-lock.json").is_file() and (dist / "pyodide.mjs").is_file()


def pytest_configure(config: pytest.Config) -> None:
    """Defaults that work offline: the Playwright runner (Selenium would download a
    driver) and build/pyodide-dist when --dist-dir was left at pytest-pyodide's default."""
    if not any(str(a).startswith("--runner") for a in config.invocation_params.args):
        config.option.runner = "playwright"
    left_at_default = Path(config.option.dist_dir).resolve() == Path("pyodide").resolve()
    if not left_at_default or _dist_ready(_dist_dir(config)):
        return
    config.option.dist_dir = DEFAULT_DIST_DIR
    pytest_wrapper.pyodide_dist_dir = DEFAULT_DIST_DIR


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (rather than error) Pyodide tests whose runtime is not available."""
    if "runtime" not in getattr(item, "fixturenames", ()):
        return  # a host test
    dist = _dist_dir(item.config)
    if not _dist_ready(dist):
        pytest.skip(f"Pyodide dist folder {dist} missing or incomplete; run `make setup`")
    callspec = getattr(item, "callspec", None)
    runtime = callspec.params.get("runtime") if callspec is not None else None
    if runtime == "node" and shutil.which("node") is None:
        pytest.skip("node not found")
    if runtime == "chrome" and not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set NIMBUS_CHROMIUM)"
        )


class _LazyBrowsers(dict[str, Any]):
    """Launches a browser the first time a runner asks for it."""

    def __init__(self) -> None:
        super().__init__()
        self._playwright: Any = None

    def __missing__(self, runtime: str) -> Any:
        if runtime != "chrome":
            raise KeyError(f"no offline browser configured for runtime {runtime!r}")
        if self._playwright is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
        browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=get_global_config().get_flags("chrome"),
            headless=True,
        )
        self[runtime] = browser
        return browser

    def close(self) -> None:
        for browser in self.values():
            with contextlib.suppress(Exception):  # already gone
                browser.close()
        self.clear()
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None


@pytest.fixture(scope="module")
def playwright_browsers(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Override of pytest-pyodide's fixture: Debian Chromium, no downloads, nothing for node.

    Module scope like the original: a Playwright sync instance alive across
    the whole session would clash with pytest-asyncio's event loops.
    """
    if request.config.option.runner.lower() != "playwright":
        yield {}  # selenium runner: pytest-pyodide starts drivers itself
        return
    browsers = _LazyBrowsers()
    try:
        yield browsers
    finally:
        browsers.close()


@pytest.fixture(scope="session")
def nimbus_wheel_name(request: pytest.FixtureRequest) -> str:
    """File name of the project wheel inside the dist folder (from its lock file)."""
    lock_path = _dist_dir(request.config) / "pyodide-lock.json"
    packages = json.loads(lock_path.read_text(encoding="utf-8"))["packages"]
    if PROJECT_PACKAGE not in packages:
        pytest.fail(f"{lock_path} has no {PROJECT_PACKAGE!r} entry; run `make setup`")
    return str(packages[PROJECT_PACKAGE]["file_name"])


@pytest.fixture
def selenium_nimbus(selenium: Any, nimbus_wheel_name: str) -> Any:
    """The module-scoped Pyodide instance with the project wheel installed (once per instance)."""
    if getattr(selenium, "_nimbus_wheel", None) != nimbus_wheel_name:
        # By name via the dist's lock file (sha256-checked in Chromium);
        # equivalent: selenium.load_package(f"{selenium.base_url}/{nimbus_wheel_name}")
        selenium.load_package(PROJECT_PACKAGE)
        selenium._nimbus_wheel = nimbus_wheel_name
    return selenium


@pytest.fixture
def host_nimbus_version() -> str:
    """``nimbus_websocket.__version__`` of the host (source) tree."""
    import nimbus_websocket

    return nimbus_websocket.__version__
