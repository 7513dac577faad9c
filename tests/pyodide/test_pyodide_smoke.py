"""Smoke tests: the project wheel installs and imports in Pyodide (Node and Chromium).

Real core tests follow the same pattern: take ``selenium_nimbus`` as the
first argument of a ``@run_in_pyodide`` function and import from
``nimbus_websocket`` inside it (see conftest.py).
"""

from __future__ import annotations

from typing import Any

from pytest_pyodide import run_in_pyodide


@run_in_pyodide
def test_import_version(selenium_nimbus: Any, host_nimbus_version: str) -> None:
    import sys

    import nimbus_websocket.core

    import nimbus_websocket

    assert sys.platform == "emscripten"
    assert sys.version_info >= (3, 13)
    assert nimbus_websocket.__version__ == host_nimbus_version
    assert "site-packages" in (nimbus_websocket.__file__ or "")
    assert nimbus_websocket.core.__name__ == "nimbus_websocket.core"


@run_in_pyodide(packages=["micropip"])
def test_micropip_is_offline_available(selenium: Any) -> None:
    import micropip

    assert micropip.__name__ == "micropip"


def test_runtime_has_websocket_and_blob(selenium: Any) -> None:
    # Node: needs --experimental-websocket (Node < 22) and the extra vm globals.
    kinds = selenium.run_js("return [typeof WebSocket, typeof Blob];")
    assert kinds == ["function", "function"], (selenium.browser, kinds)
