"""Prometheus metrics of the reference server (``--metrics``, served at ``/metrics``).

Each :class:`Server` has its own registry, so several servers in one process
(tests) do not collide.  Payload bytes are counted, never recorded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """Counters and gauges named ``nimbus_*``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.bytes = Counter("nimbus_bytes", "Payload bytes by direction and kind", ["direction", "kind"], registry=r)
        self.frames = Counter("nimbus_frames", "WebSocket messages by direction and kind", ["direction", "kind"], registry=r)
        self.credit = Counter("nimbus_credit_granted_bytes", "Credit granted by clients", registry=r)
        self.backpressure = Counter(
            "nimbus_backpressure_seconds", "Seconds channels spent paused for lack of credit", registry=r
        )
        self.connections = Gauge("nimbus_connections", "Open WebSocket connections", registry=r)
        self.connections_total = Counter("nimbus_connections_opened", "WebSocket connections accepted", registry=r)
        self.channels = Gauge("nimbus_channels", "Live channels", registry=r)
        self.channels_total = Counter("nimbus_channels_opened", "Channels opened", registry=r)
        self.reconnects = Counter("nimbus_reconnects", "Connections that resumed a session", registry=r)
        self.resumes_failed = Counter("nimbus_resume_failures", "Rejected resumes", registry=r)
        self.closes = Counter("nimbus_close_codes", "Connections closed, by code", ["code"], registry=r)
        self.sessions = Gauge("nimbus_sessions", "Sessions (attached or retained)", registry=r)
        self.term_env_dropped = Counter(
            "nimbus_term_env_dropped", "open.term.env variables dropped (not on the allow-list)", registry=r
        )

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
