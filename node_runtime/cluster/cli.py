"""``nimbus-ws serve`` options of a cluster: ``--redis``, ``--advertise``, ``--cluster-secret-file``,
``--workers``, ``--drain-timeout``, ``--instance-id`` (docs/scale.md).

Importing this module imports neither Redis nor the server: ``redis`` is the
optional ``cluster`` extra, loaded only when ``--redis`` (or ``--workers``) is given.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..server.app import Server
    from .node import ClusterNode

__all__ = ["DEFAULT_CLUSTER_DRAIN", "add_arguments", "check_args", "drain_timeout", "node_from_args"]

#: ``--drain-timeout`` default in a cluster (``--redis`` or ``--workers``); 0 (no drain) otherwise.
DEFAULT_CLUSTER_DRAIN = 30.0
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the cluster options on the ``serve`` parser."""
    p.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="join a cluster whose session directory is this Redis (redis://HOST:PORT/DB, rediss://, unix://); "
        "needs --cluster-secret-file and tokens; a resume for another instance's session is relayed to its "
        "owner (docs/scale.md; the cluster extra: pip install 'nimbus-websocket[server,cluster]'). Default: none, one process alone",
    )
    p.add_argument(
        "--advertise",
        metavar="URL",
        default=None,
        help="the WebSocket URL other instances reach this one at, ws://HOST:PORT/PATH (port 0 or none: the "
        "bound port; default: this server's own URL)",
    )
    p.add_argument(
        "--cluster-secret-file",
        metavar="FILE",
        default=None,
        help="the secret every instance of the cluster shares (>= 16 bytes): signs resume tokens and "
        "authenticates relays between instances (default: none; --workers without it draws one)",
    )
    p.add_argument(
        "--instance-id", metavar="ID", default=None, help="this instance's name in the directory and logs (default: random)"
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=1,
        help="run N server processes on one port (SO_REUSEPORT) sharing one session directory: --redis, or "
        "else a private redis-server the command starts (default %(default)s)",
    )
    p.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help=f"on SIGTERM refuse new sessions and wait up to this long for the existing ones to end, then "
        f"close with 1001 (a second signal ends the wait). Default {DEFAULT_CLUSTER_DRAIN:g} in a cluster, 0 otherwise",
    )
    # Internal: set by --workers on the processes it starts.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def drain_timeout(args: argparse.Namespace) -> float:
    """The drain timeout ``args`` ask for (the cluster default when unset)."""
    if args.drain_timeout is not None:
        return float(args.drain_timeout)
    return DEFAULT_CLUSTER_DRAIN if (args.redis or args.workers > 1 or args.worker) else 0.0


def check_args(args: argparse.Namespace, tokens: tuple[str, ...]) -> None:
    """One clear line (``SystemExit``) for a cluster option that cannot work."""
    if args.workers < 1:
        raise SystemExit("nimbus-ws serve: --workers must be at least 1")
    if args.drain_timeout is not None and args.drain_timeout < 0:
        raise SystemExit("nimbus-ws serve: --drain-timeout must be 0 or more")
    if args.instance_id is not None and not _INSTANCE_ID.fullmatch(args.instance_id):
        raise SystemExit("nimbus-ws serve: --instance-id: 1-64 letters, digits, '-' or '_'")
    if args.advertise is not None:
        if not args.redis:
            raise SystemExit("nimbus-ws serve: --advertise needs --redis")
        parts = urlsplit(args.advertise)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise SystemExit("nimbus-ws serve: --advertise must be a ws:// or wss:// URL")
    if (args.redis or args.workers > 1) and not tokens:
        raise SystemExit(
            "nimbus-ws serve: a cluster (--redis, --workers) needs tokens (--token-file or NIMBUS_TOKEN): "
            "anonymous access (the server's own UID on loopback) cannot be checked through a relay"
        )
    if args.redis:
        if urlsplit(args.redis).scheme not in ("redis", "rediss", "unix"):
            raise SystemExit("nimbus-ws serve: --redis must be a redis://, rediss:// or unix:// URL")
        if args.cluster_secret_file is None:
            raise SystemExit("nimbus-ws serve: --redis needs --cluster-secret-file (the secret every instance shares)")
        try:
            import redis  # noqa: F401
        except ImportError:
            raise SystemExit(
                "nimbus-ws serve: --redis needs the cluster extra: pip install 'nimbus-websocket[server,cluster]'"
            ) from None
    elif args.cluster_secret_file is not None and args.workers <= 1:
        raise SystemExit("nimbus-ws serve: --cluster-secret-file needs --redis")


def node_from_args(server: Server, args: argparse.Namespace) -> ClusterNode | None:
    """The cluster node ``args`` ask for (``None``: neither a cluster nor a drain)."""
    if not args.redis and drain_timeout(args) <= 0:
        return None
    from .node import ClusterNode
    from .secret import ClusterSecret, SecretError

    secret = None
    if args.redis:
        try:
            secret = ClusterSecret.from_file(args.cluster_secret_file)
        except SecretError as exc:
            raise SystemExit(f"nimbus-ws serve: {exc}") from None
    kw: dict[str, Any] = {}
    if args.worker:
        kw["relay_listen"] = ("127.0.0.1", 0)
    return ClusterNode(
        server,
        redis_url=args.redis,
        secret=secret,
        advertise=args.advertise,
        instance=args.instance_id,
        **kw,
    )
