"""The ``nimbus-ws`` command line: ``serve``, ``connect``, ``conformance``, ``bench``.

Each subcommand lives with its layer and is imported lazily, so
``nimbus-ws connect`` does not import the server's dependencies.

A subcommand whose third-party dependency is not installed (``websockets`` for
all three) is still listed; running it prints one line naming the extra to
install (``pip install 'nimbus-websocket[server]'``) and exits with status 2.

Every parser is a :class:`StrictArgumentParser`: no prefix matching (``--tok``
is not ``--token-env``) and no argument value echoed in a usage error (it may
be a secret typed in the wrong place).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["StrictArgumentParser", "build_parser", "run", "version"]

_UNRECOGNIZED = "unrecognized arguments: "


class StrictArgumentParser(argparse.ArgumentParser):
    """``ArgumentParser`` with ``allow_abbrev=False`` and errors that name options, not values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith(_UNRECOGNIZED):  # "--tok s3cret": name --tok, never s3cret
            words = message[len(_UNRECOGNIZED) :].split(" ")
            names = [w.split("=", 1)[0] + ("=..." if "=" in w else "") for w in words if w.startswith("-")]
            hidden = len(words) - len(names)
            message = _UNRECOGNIZED + " ".join(names + ([f"(and {hidden} value(s), not shown)"] if hidden else []))
        else:  # "invalid int value: 's3cret'", "invalid choice: 's3cret'"
            message = re.sub(r"(value|choice): '.*?'", r"\1: (not shown)", message)
        super().error(message)

_SUBCOMMANDS = {
    "serve": "nimbus_websocket.node_runtime.server.cli",
    "connect": "nimbus_websocket.node_runtime.client.cli",
    "cp": "nimbus_websocket.node_runtime.client.cp",
    "share": "nimbus_websocket.node_runtime.client.share_cli",
    "conformance": "nimbus_websocket.node_runtime.conformance.cli",
    "record": "nimbus_websocket.node_runtime.record_cli",
}

#: The pip extra that brings each subcommand's dependencies (pyproject.toml).
_EXTRAS = {"serve": "server", "connect": "client", "cp": "client", "share": "client", "conformance": "client", "record": "server"}


def version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return importlib.metadata.version("nimbus-websocket")
    except importlib.metadata.PackageNotFoundError:
        from nimbus_websocket import __version__

        return __version__


def _add_missing(sub: Any, name: str, missing: str) -> None:
    """A stand-in for a subcommand whose dependency ``missing`` is not installed."""
    extra = _EXTRAS[name]
    p = sub.add_parser(name, help=f"not installed: pip install 'nimbus-websocket[{extra}]'", add_help=False)
    p.set_defaults(
        func=None,
        missing_extra=f"nimbus-ws {name}: needs the '{extra}' extra (module {missing} is not installed): "
        f"pip install 'nimbus-websocket[{extra}]'",
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = StrictArgumentParser(prog="nimbus-ws", description="nimbus.ssh.v1: SSH terminals over one WebSocket")
    parser.add_argument("--version", action="version", version=f"nimbus-ws {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=StrictArgumentParser)
    for name, module in _SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the subcommand itself is not installed
                continue
            if exc.name is None or exc.name.split(".")[0] == "nimbus_websocket":
                raise  # a broken installation of this package is a real error
            _add_missing(sub, name, exc.name.split(".")[0])
            continue
        mod.add_parser(sub)
    for name, p in sub.choices.items():  # whatever class a subcommand used: no prefix matching
        p.allow_abbrev = False
        p.set_defaults(nimbus_subcommand=name)  # ``args.command`` may be a subcommand's own option
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(list(argv))
    missing = getattr(args, "missing_extra", None)
    if missing is not None:  # whatever else was given: the one thing to fix is the install
        sys.stderr.write(missing + "\n")
        return 2
    if rest:
        parser.error(_UNRECOGNIZED + " ".join(rest))
    try:
        result: int = args.func(args)
    except ModuleNotFoundError as exc:  # a dependency imported lazily (``connect``'s websockets)
        top, name = (exc.name or "nimbus_websocket").split(".")[0], args.nimbus_subcommand
        if top == "nimbus_websocket" or name not in _EXTRAS:
            raise
        extra = _EXTRAS[name]
        sys.stderr.write(
            f"nimbus-ws {name}: needs the '{extra}' extra (module {top} is not installed): "
            f"pip install 'nimbus-websocket[{extra}]'\n"
        )
        return 2
    return result
