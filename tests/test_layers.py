"""The layers import only what their room allows (docs/architecture.md).

Reads every module's imports with :mod:`ast` (nothing is imported) and
resolves relative imports to their absolute names, so a rule cannot be
dodged by spelling an import differently:

* ``core/*.py`` (the sans-I/O protocol) imports neither asyncio nor any
  runtime, nor the I/O libraries;
* ``core/aio/`` (the client both runtimes share) imports asyncio and the
  core, never ``websockets``, ``js``, ``pyodide`` or a runtime;
* ``web_runtime/`` never imports ``node_runtime``;
* nothing outside ``node_runtime/`` imports ``node_runtime`` from the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "nimbus_websocket"
# Source folder -> dotted package it is installed as (pyproject.toml).
ROOTS = {
    "core": f"{NAMESPACE}.core",
    "web_runtime": f"{NAMESPACE}.web_runtime",
    "node_runtime": f"{NAMESPACE}.node_runtime",
    "nimbus_websocket": NAMESPACE,
}
IO_LIBRARIES = ("websockets", "js", "pyodide", "asyncssh", "prometheus_client")


def _modules(folder: str) -> Iterator[tuple[Path, str]]:
    """(path, dotted module name) of every ``.py`` below ``folder``."""
    base = REPO_ROOT / folder
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        dotted = ".".join([ROOTS[folder], *parts])
        if path.name == "__init__.py":
            dotted_pkg = dotted
        else:
            dotted_pkg = dotted.rpartition(".")[0]
        yield path, dotted_pkg


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (including ``TYPE_CHECKING`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            # importlib.import_module("...x", __name__): resolve string literals
            if (
                node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                name = node.args[0].value
                level = len(name) - len(name.lstrip("."))
                if level:
                    base = package.split(".")
                    base = base[: len(base) - (level - 1)]
                    name = (
                        ".".join([*base, name.lstrip(".")]) if name.lstrip(".") else ".".join(base)
                    )
                found.add(name)
        elif isinstance(node, ast.Dict):
            # lazy re-export tables: {"Name": "..pkg.module"}
            for value in node.values:
                if (
                    isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and value.value.startswith(".")
                ):
                    level = len(value.value) - len(value.value.lstrip("."))
                    base = package.split(".")
                    base = base[: len(base) - (level - 1)]
                    found.add(".".join([*base, value.value.lstrip(".")]))
    return found


def _hits(imported: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported if any(m == f or m.startswith(f + ".") for f in forbidden))


def _violations(folder: str, forbidden: tuple[str, ...], *, skip: str | None = None) -> list[str]:
    out = []
    for path, package in _modules(folder):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if skip is not None and rel.startswith(skip):
            continue
        bad = _hits(imports_of(path, package), forbidden)
        if bad:
            out.append(f"{rel}: {', '.join(bad)}")
    return out


def test_sans_io_core_imports_no_asyncio_and_no_runtime() -> None:
    forbidden = (
        "asyncio",
        "threading",
        "socket",
        "selectors",
        *IO_LIBRARIES,
        f"{NAMESPACE}.core.aio",
        f"{NAMESPACE}.web_runtime",
        f"{NAMESPACE}.node_runtime",
    )
    assert _violations("core", forbidden, skip="core/aio/") == []


def test_shared_client_imports_no_socket_library_and_no_runtime() -> None:
    forbidden = (*IO_LIBRARIES, f"{NAMESPACE}.web_runtime", f"{NAMESPACE}.node_runtime")
    bad = [v for v in _violations("core", forbidden) if v.startswith("core/aio/")]
    assert bad == []


def test_web_runtime_never_imports_node_runtime() -> None:
    assert _violations("web_runtime", (f"{NAMESPACE}.node_runtime", "websockets")) == []


def test_resolver_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The checker itself: relative, lazy (``import_module``) and table imports all resolve."""
    mod = tmp_path / "m.py"
    mod.write_text(
        "import asyncio\n"
        "from ..node_runtime.client import connect\n"
        "import importlib\n"
        "importlib.import_module('..node_runtime.server', __name__)\n"
        "_WHERE = {'X': '..node_runtime.cli'}\n",
        encoding="utf-8",
    )
    got = imports_of(mod, f"{NAMESPACE}.web_runtime")
    assert "asyncio" in got
    assert f"{NAMESPACE}.node_runtime.client.connect" in got
    assert f"{NAMESPACE}.node_runtime.server" in got
    assert f"{NAMESPACE}.node_runtime.cli" in got


@pytest.mark.parametrize("folder", ["core", "web_runtime"])
def test_every_module_is_checked(folder: str) -> None:
    """The walk finds the modules it claims to check (a rename cannot empty it)."""
    names = {p.relative_to(REPO_ROOT).as_posix() for p, _ in _modules(folder)}
    must = {
        "core": {"core/client.py", "core/aio/connection.py"},
        "web_runtime": {"web_runtime/bridge.py"},
    }
    assert must[folder] <= names
