"""The ``nimbus-ws`` command line: ``serve``, ``connect``, ``conformance``, ``bench``.

Each subcommand lives with its layer and is imported lazily, so
``nimbus-ws connect`` does not import the server's dependencies.

Every parser is a :class:`StrictArgumentParser`: no prefix matching (``--tok``
is not ``--token-env``) and no argument value echoed in a usage error (it may
be a secret typed in the wrong place).
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["StrictArgumentParser", "build_parser", "run"]

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
    "conformance": "nimbus_websocket.node_runtime.conformance.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = StrictArgumentParser(prog="nimbus-ws", description="nimbus.ssh.v1: SSH terminals over one WebSocket")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=StrictArgumentParser)
    for module in _SUBCOMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency is a real error
                raise
            continue
        mod.add_parser(sub)
    for p in sub.choices.values():  # whatever class a subcommand used: no prefix matching
        p.allow_abbrev = False
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    args = build_parser().parse_args(list(argv))
    result: int = args.func(args)
    return result
