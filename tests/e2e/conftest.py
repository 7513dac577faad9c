"""End-to-end fixtures: the real reference server, the demo site and Debian Chromium.

* ``site_dir`` -- ``build/site`` brought up to date by ``scripts/build_site.py``
  (skips when the Pyodide dist or the runtime facade is missing: ``make setup``);
* ``browser`` -- ``/usr/bin/chromium`` through Playwright (never a downloaded
  browser), module scoped like ``tests/pyodide/conftest.py`` (a sync
  Playwright instance alive across modules would clash with pytest-asyncio);
* ``e2e_server.ServerThread`` runs the reference server, ``demo_page.Demo``
  wraps one page of the demo.

Screenshots go to ``artifacts/e2e/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_server import REPO_ROOT

SITE_DIR = REPO_ROOT / "build" / "site"
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
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
    "--js-flags=--expose-gc",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def site_dir() -> Path:
    """``build/site``, rebuilt when a source changed (a few ms otherwise)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_site
    finally:
        sys.path.pop(0)
    try:
        _, _, _, warnings = build_site.build(SITE_DIR, REPO_ROOT)
    except build_site.BuildError as e:
        pytest.skip(f"demo site cannot be built: {e}")
    facade = json.loads((SITE_DIR / "site.json").read_text(encoding="utf-8")).get("facade")
    if not facade or not (SITE_DIR / facade).is_file():
        pytest.skip("web_runtime/js/nimbus.mjs (the runtime facade) is missing")
    for w in warnings:
        print(f"build_site: {w}")
    return SITE_DIR


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage) with a terminal-sized viewport."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 620}, device_scale_factor=1)
    try:
        yield ctx
    finally:
        # End the pages' sessions (close 1000) so that their shells do not
        # linger on the server for the resume window; best effort.
        for page in ctx.pages:
            with contextlib.suppress(Exception):
                page.evaluate(
                    "() => Promise.race([window.nimbusDemo?.conn?.close(),"
                    " new Promise((r) => setTimeout(r, 2000))])"
                )
        ctx.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``shots(page, state)`` saves ``artifacts/e2e/<test>-<state>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")

    def shot(page: Any, state: str) -> Path:
        path = ARTIFACTS / f"{name}-{state}.png"
        page.screenshot(path=str(path))
        return path

    return shot


@pytest.fixture
def site_server(site_dir: Path) -> Iterator[Any]:
    """The reference server (PTY backend, bash without rc files) serving the built site."""
    from e2e_server import PTY_COMMAND, ServerThread

    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def page_server(site_dir: Path) -> Iterator[Any]:
    """:func:`site_server` shared by a module's tests (the page-feature tests open many pages)."""
    from e2e_server import PTY_COMMAND, ServerThread

    st = ServerThread(static_dir=str(site_dir), pty_command=PTY_COMMAND).start()
    try:
        yield st
    finally:
        st.stop()
