"""The JavaScript side, as seen from Pyodide: ``js`` and ``pyodide.ffi``, imported once.

Outside Pyodide (host CPython: documentation builds, unit tests) the imports
fail and every name here is ``None``; the modules of this package only touch
them when they actually talk to JavaScript, and tests substitute fakes with
``monkeypatch.setattr(_ffi, "js", ...)``.  Everything reads the names through
this module (``_ffi.js``), never ``from ._ffi import js``, so a substitution
is seen everywhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JsProxy", "create_proxy", "global_get", "js", "jsnull", "to_js"]

js: Any
create_proxy: Any
to_js: Any
JsProxy: Any
jsnull: Any

try:  # pragma: no cover - only inside Pyodide
    import js  # type: ignore[import-not-found,no-redef]
    from pyodide.ffi import JsProxy, create_proxy, to_js  # type: ignore[import-not-found,no-redef]

    try:
        from pyodide.ffi import jsnull  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        jsnull = None
except ImportError:
    js = None
    create_proxy = to_js = JsProxy = jsnull = None


def global_get(name: str) -> Any:
    """``globalThis[name]`` or ``None`` when it is not defined (or not in Pyodide)."""
    if js is None:
        return None
    try:
        value = getattr(js, name)
    except AttributeError:
        return None
    return value
