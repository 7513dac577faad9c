"""``nimbus-ws`` / ``python -m nimbus_websocket`` entry point."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``nimbus-ws`` command line."""
    from nimbus_websocket.node_runtime.cli import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
