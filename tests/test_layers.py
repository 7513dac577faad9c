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
        dotted_pkg = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
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


# --------------------------------------------------------------------------
# Protocol rules live in the core: runtimes hold no close code and test no state
# --------------------------------------------------------------------------

#: Close codes whose choice is a protocol rule (RFC 6455 1000/1001, contract 4000-4015, 4016 [ext]).
CLOSE_CODES = frozenset({1000, 1001, *range(4000, 4017)})
#: Public names of connection and channel states (core/state.py).
STATE_ENUMS = frozenset({"ConnState", "ChannelState", "ConnPhase"})
STATE_NAMES = frozenset(
    {"idle", "connecting", "authenticating", "ready", "reconnecting", "closed"}
    | {"opening", "open", "exited", "closing"}
)
#: Runtime folders: everything outside the sans-I/O core and its shared client.
RUNTIME_FOLDERS = ("web_runtime", "node_runtime")


def _name_of(node: ast.AST) -> str:
    """The rightmost name of ``a.b.c`` / ``c`` / ``f(...)`` (lower case), else ``""``."""
    if isinstance(node, ast.Call):
        return _name_of(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    if isinstance(node, ast.Name):
        return node.id.lower()
    return ""


def _codeish(name: str) -> bool:
    return "code" in name or "close" in name or "abort" in name


def _close_code_literals(tree: ast.AST) -> list[tuple[int, int]]:
    """(line, value) of close-code integers used where a close code goes."""
    hits: list[tuple[int, int]] = []

    def lit(node: ast.AST | None) -> int | None:
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in CLOSE_CODES:
            return node.value
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = _name_of(node.func)
            args = [*node.args, *(k.value for k in node.keywords)]
            if _codeish(callee) or callee.endswith("error") or callee.endswith("event"):
                hits += [(a.lineno, v) for a in args if (v := lit(a)) is not None]
            hits += [
                (k.value.lineno, v)
                for k in node.keywords
                if k.arg and _codeish(k.arg) and (v := lit(k.value)) is not None
            ]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_codeish(_name_of(s)) for s in sides):
                for s in sides:
                    elts = s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
                    hits += [(e.lineno, v) for e in elts if (v := lit(e)) is not None]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_codeish(_name_of(t)) for t in targets) and (v := lit(node.value)) is not None:
                hits.append((node.lineno, v))
        elif isinstance(node, ast.arguments):
            params = [*node.posonlyargs, *node.args]
            defaults = [None] * (len(params) - len(node.defaults)) + list(node.defaults)
            pairs = [
                *zip(params, defaults, strict=True),
                *zip(node.kwonlyargs, node.kw_defaults, strict=True),
            ]
            hits += [
                (d.lineno, v)
                for p, d in pairs
                if d is not None and _codeish(p.arg.lower()) and (v := lit(d)) is not None
            ]
    return hits


def _state_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing a connection/channel state (enum members or their public names)."""
    hits: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        flat: list[ast.AST] = []
        for s in sides:
            flat += s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
        enum_member = any(
            isinstance(e, ast.Attribute)
            and isinstance(e.value, ast.Name)
            and e.value.id in STATE_ENUMS
            for e in flat
        )
        statey = any(_name_of(s) in {"state", "phase", "_state", "_phase"} for s in sides)
        name_literal = any(isinstance(e, ast.Constant) and e.value in STATE_NAMES for e in flat)
        if enum_member or (statey and name_literal):
            hits.append(node.lineno)
    return hits


def _runtime_files() -> Iterator[Path]:
    for folder in RUNTIME_FOLDERS:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def test_runtimes_hold_no_close_code_literal() -> None:
    bad = []
    for path in _runtime_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        bad += [
            f"{path.relative_to(REPO_ROOT)}:{line}: {v}" for line, v in _close_code_literals(tree)
        ]
    assert bad == [], "close-code choices belong in the core (core/errors.py):\n" + "\n".join(bad)


def test_runtimes_compare_no_protocol_state() -> None:
    bad = []
    for path in _runtime_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        bad += [f"{path.relative_to(REPO_ROOT)}:{line}" for line in _state_comparisons(tree)]
    assert bad == [], "state decisions belong to the core's tables (core/state.py):\n" + "\n".join(
        bad
    )


def test_rule_checkers_find_what_they_look_for() -> None:
    """The two checkers themselves, on a sample that breaks both rules."""
    sample = ast.parse(
        "def f(ws, ch, code=4000):\n"
        "    ws.close(4003, 'x')\n"
        "    err = CloseError(1006, None, 'X', 'y')\n"
        "    if ev.code == 4011: pass\n"
        "    if ch.state == ChannelState.OPEN: pass\n"
        "    if conn.state != 'ready': pass\n"
        "    ms = now * 1000\n"
    )
    assert sorted(v for _, v in _close_code_literals(sample)) == [4000, 4003, 4011]
    assert _state_comparisons(sample) == [5, 6]
