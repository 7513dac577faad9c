"""One instance of a cluster: its registry, gate, directory, drain and log identity.

    server = Server(options)
    node = ClusterNode(server, redis_url="redis://127.0.0.1:6379/0", secret=ClusterSecret(b"..."))
    await server.start()
    await node.start()
    ...
    await node.shutdown(stop_event, drain_timeout=30)   # drains, then server.stop(), leaves Redis

Without ``redis_url`` the node only drains (a single server with
``--drain-timeout``).  docs/scale.md has the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .gate import Gate
from .registry import ClusterRegistry
from .secret import ClusterSecret

if TYPE_CHECKING:
    from ..server.app import Server
    from .directory import Directory

__all__ = ["ClusterNode", "InstanceFilter", "new_instance_id"]

log = logging.getLogger("nimbus_websocket.cluster")

#: Seconds between two checks of the session count while draining.
DRAIN_POLL = 0.1


def new_instance_id() -> str:
    """A random instance id (12 hex digits)."""
    return secrets.token_hex(6)


class InstanceFilter(logging.Filter):
    """Adds ``instance=<id>`` to every log record a handler writes."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag ``record`` (never drops it)."""
        if not hasattr(record, "instance"):
            record.instance = self.instance
        return True


class ClusterNode:
    """Joins ``server`` to a cluster (``redis_url``) and/or gives it a drain."""

    def __init__(
        self,
        server: Server,
        *,
        redis_url: str | None = None,
        secret: ClusterSecret | None = None,
        advertise: str | None = None,
        instance: str | None = None,
        relay_listen: tuple[str, int] | None = None,
        heartbeat: float = 1.0,
        instance_ttl: float = 5.0,
    ) -> None:
        if redis_url is not None and secret is None:
            raise ValueError("a cluster needs its secret")
        self.server = server
        self.instance = instance or new_instance_id()
        self.redis_url = redis_url
        self.secret = secret
        self.advertise = advertise
        self.relay_listen = relay_listen
        self.heartbeat = heartbeat
        self.instance_ttl = instance_ttl
        self.directory: Directory | None = None
        self.gate = Gate(server, self.instance, secret if redis_url else None)
        self.registry: ClusterRegistry | None = None
        if redis_url is not None and secret is not None:
            # Before start: no connection has seen the plain registry.
            self.registry = ClusterRegistry(server.config, secret)
            server.registry = self.registry
            # One principal per token across the cluster (policy.AuthPolicy keys it per server).
            server.auth.share_principal_key(secret.derive("principal"))
        server.gate = self.gate
        self._filter = InstanceFilter(self.instance)
        for h in logging.getLogger("nimbus_websocket").handlers:
            h.addFilter(self._filter)

    async def start(self) -> None:
        """After ``server.start()``: the relay listener, then the directory and its heartbeat."""
        server = self.server
        if self.registry is None or self.redis_url is None:
            return
        if self.relay_listen is not None:
            host, port = self.relay_listen
            bound = await server.listen_also(host, port)
            self.advertise = f"{'wss' if server.tls else 'ws'}://{host}:{bound}{server.ws_path}"
        self.advertise = _with_port(self.advertise or server.url, server.port)
        from .directory import Directory

        registry = self.registry

        def owned() -> tuple[list[str], dict[str, int]]:
            sids = [s.sid for s in registry.sessions()]
            return sids, registry.counts()

        self.directory = Directory(
            self.redis_url,
            self.instance,
            self.advertise,
            owned=owned,
            session_ttl=server.config.retention + 10,
            heartbeat=self.heartbeat,
            instance_ttl=self.instance_ttl,
        )
        registry.directory = self.directory
        self.gate.directory = self.directory
        if server.metrics is not None:
            server.metrics.instance.labels(self.instance).set(1)
            server.metrics.sessions_owned.set_function(lambda: len(registry))
        await self.directory.start()
        log.info("cluster joined", extra={"event": "cluster_joined", "advertise": self.advertise, "redis": _safe_url(self.redis_url)})

    async def drain(self, timeout: float, stop: asyncio.Event | None = None) -> str:
        """No new sessions; wait until every session ended, ``timeout`` passed or ``stop`` is set.

        Returns why it ended: ``"empty"``, ``"timeout"`` or ``"signal"``.
        """
        self.gate.draining = True
        if self.directory is not None:
            self.directory.set_draining(True)
        registry = self.server.registry
        log.info("draining", extra={"event": "drain", "sessions": len(registry), "timeout": timeout})
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / DRAIN_POLL) + 2):  # bounded: the timeout in polls
            if len(registry) == 0:
                return "empty"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if stop is None:
                await asyncio.sleep(min(DRAIN_POLL, left))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(DRAIN_POLL, left)):
                    await stop.wait()
            if stop.is_set():
                return "signal"
        return "timeout"

    async def shutdown(self, stop: asyncio.Event | None = None, *, drain_timeout: float = 0.0) -> None:
        """Drain (when ``drain_timeout`` > 0; ``stop`` set again ends it early), then close every
        connection with 1001, stop the server, and leave the directory."""
        if drain_timeout > 0:
            if stop is not None:
                stop.clear()
            why = await self.drain(drain_timeout, stop)
            log.info("drained", extra={"event": "drained", "why": why, "sessions": len(self.server.registry)})
        await self.server.stop()
        if self.directory is not None:
            await self.directory.stop()


def _with_port(url: str, port: int) -> str:
    """``url`` with port 0 (or none) replaced by ``port`` (the bound one)."""
    parts = urlsplit(url)
    if parts.port not in (None, 0):
        return url
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, ""))


def _safe_url(url: str) -> str:
    """``url`` without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
