"""The ``nimbus-ws`` command line: ``serve``, ``connect``, ``conformance``, ``bench``.

Each subcommand lives with its layer and is imported lazily, so
``nimbus-ws connect`` does not import the server's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["build_parser", "run"]

_SUBCOMMANDS = {
    "serve": "nimbus_websocket.node_runtime.server.cli",
    "connect": "nimbus_websocket.node_runtime.client.cli",
    "conformance": "nimbus_websocket.node_runtime.conformance.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="nimbus-ws", description="nimbus.ssh.v1: SSH terminals over one WebSocket")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _SUBCOMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency is a real error
                raise
            continue
        mod.add_parser(sub)
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    args = build_parser().parse_args(list(argv))
    result: int = args.func(args)
    return result
