"""Prometheus metrics of the reference server (``--metrics``, served at ``/metrics``).

Each :class:`Server` has its own registry, so several servers in one process
(tests) do not collide.  Payload bytes are counted, never recorded.

Who may read ``/metrics`` is the server's route (``app.py``): the bearer token
when tokens are configured, else the anonymous rule; a loopback-bound server
also wants a loopback ``Host`` (docs/security.md, 12).  Every label has a
bounded set of values: a close code a client chooses (any of 3000-4999) is
counted under ``"other"`` unless it is a :class:`~...core.errors.CloseCode`
member (:func:`close_code_label`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ...core.errors import CloseCode

__all__ = ["OTHER_CLOSE_CODE", "Metrics", "close_code_label"]

#: The ``code`` label of every close code that is no :class:`CloseCode` member.
OTHER_CLOSE_CODE = "other"
_KNOWN_CLOSE_CODES = frozenset(int(c) for c in CloseCode)


def close_code_label(code: int) -> str:
    """The ``code`` label of ``nimbus_close_codes``: the number of a known code, else ``"other"``.

    At most ``len(CloseCode) + 1`` label values, whatever codes clients close with.
    """
    n = int(code)
    return str(n) if n in _KNOWN_CLOSE_CODES else OTHER_CLOSE_CODE


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
        #: By :func:`close_code_label` only (:meth:`count_close`): bounded cardinality.
        self.closes = Counter(
            "nimbus_close_codes", "Connections closed, by code (unknown codes: other)", ["code"], registry=r
        )
        #: ``op`` get|put, ``result`` done|failed|cancelled: six series at most.
        self.file_transfers = Counter(
            "nimbus_file_transfers", "File transfers ended, by op and result", ["op", "result"], registry=r
        )
        self.file_bytes = Counter("nimbus_file_bytes", "File bytes moved, by op", ["op"], registry=r)
        self.sessions = Gauge("nimbus_sessions", "Sessions (attached or retained)", registry=r)
        self.refused = Counter(
            "nimbus_refused", "Requests refused by an admission limit (connections, static)", ["limit"], registry=r
        )
        self.term_env_dropped = Counter(
            "nimbus_term_env_dropped", "open.term.env variables dropped (not on the allow-list)", registry=r
        )
        # Cluster (node_runtime/cluster, docs/scale.md); zero outside a cluster.
        self.sessions_owned = Gauge("nimbus_cluster_sessions_owned", "Sessions this instance owns in the directory", registry=r)
        self.relayed = Counter(
            "nimbus_cluster_relayed_connections", "Connections relayed to another instance (out) or from one (in)", ["direction"], registry=r
        )
        self.relay_bytes = Counter(
            "nimbus_cluster_relay_bytes", "Message bytes this instance relayed, towards the owner or the client", ["direction"], registry=r
        )
        self.instance = Gauge("nimbus_cluster_instance", "1, labelled with this instance's id", ["instance"], registry=r)

    def count_close(self, code: int) -> None:
        """Count one connection closed with ``code`` (unknown codes as ``"other"``)."""
        self.closes.labels(close_code_label(code)).inc()

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
