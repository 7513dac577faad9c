"""The options of a client connection, defined once: :class:`ConnectOptions`.

Every entry point builds one :class:`ConnectOptions` and nothing else holds
a default:

* the host runtime's :func:`~nimbus_websocket.node_runtime.connect` and
  :func:`~.connection.connect_with` take its fields as keywords
  (:meth:`ConnectOptions.from_keywords`: an unknown keyword is a
  ``TypeError``) or a ready object (``options=``);
* the browser runtime's :func:`~nimbus_websocket.web_runtime.connect` does the
  same, with the browser's resume default (``sessionStorage``);
* the JavaScript facade's JSON options (camelCase, times in milliseconds)
  are read by :meth:`ConnectOptions.from_json`, which knows every field's
  JSON name and unit from the field itself;
* the ``nimbus-ws connect`` CLI takes its ``--profile`` default from here.

The protocol defaults (heartbeat 20 s x 3, window 256 KiB...) are the core's
:class:`~nimbus_websocket.core.ClientOptions` defaults, read from it, never
repeated; :meth:`ConnectOptions.client_options` builds that object.

Memory per connection: at most ``max_window`` received bytes per channel
waiting to be consumed, ``input_buffer_limit`` input bytes per channel kept
for retransmission, and ``high_water_mark`` bytes in the socket's send
buffer; per process multiply by the connections (and channels) open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..client_config import ClientOptions
from ..profiles import WireProfile
from ..resume import MemoryResumeStore, NullResumeStore, ResumeStore
from ..retry import RetryPolicy

__all__ = ["ConnectOptions", "ResumeOptions", "RetryOptions"]

_CORE = ClientOptions()
_RETRY = RetryPolicy()
_MS = 1e3


def _ms(value: Any) -> float:
    return float(value) / _MS


@dataclass(frozen=True, slots=True)
class RetryOptions:
    """Reconnect backoff in milliseconds: the core's :class:`~nimbus_websocket.core.RetryPolicy`.

    The delay before attempt ``n`` (0-based) is ``min(max_delay_ms, base_ms *
    factor ** n)``, with jitter a uniform draw in its upper half; after
    ``max_retries`` failed attempts the connection gives up.  Defaults are
    the policy's (base 300 ms, jitter on, at most 10 tries).
    """

    base_ms: float = field(default=_RETRY.base * _MS, metadata={"json": "baseMs"})
    jitter: bool = field(default=_RETRY.jitter, metadata={"json": "jitter"})
    max_retries: int = field(default=_RETRY.max_retries, metadata={"json": "maxRetries"})
    factor: float = field(default=_RETRY.factor, metadata={"json": "factor"})
    max_delay_ms: float = field(default=_RETRY.max_delay * _MS, metadata={"json": "maxDelayMs"})

    def to_policy(self) -> RetryPolicy:
        """The core's :class:`~nimbus_websocket.core.RetryPolicy`."""
        return RetryPolicy(
            base=self.base_ms / _MS,
            factor=self.factor,
            max_delay=self.max_delay_ms / _MS,
            jitter=self.jitter,
            max_retries=self.max_retries,
        )

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RetryOptions:
        """From the facade's ``retry`` object (``baseMs``, ``jitter``...); unknown keys are an error."""
        return cls(**_from_json(cls, value, "retry"))


@dataclass(frozen=True, slots=True)
class ResumeOptions:
    """Where resume state lives and for how long (at most; the server's grant may be shorter).

    ``storage`` is ``"memory"`` (survives reconnects of this connection),
    ``"none"`` (no resume: a lost connection is final), ``"session"`` (the
    browser's ``sessionStorage``; the browser runtime's default) or any
    object with ``load()``/``save(dict)``/``clear()`` (a
    :class:`~nimbus_websocket.core.ResumeStore`); a store object shared
    between ``connect`` calls lets a new connection resume the channels of an
    old one (they appear in :attr:`Connection.resumed_channels`).
    """

    storage: str | ResumeStore = "memory"
    ttl_ms: int = int(_CORE.resume_ttl * _MS)

    def make_store(self) -> ResumeStore:
        """The store object for ``storage`` (``"session"`` is the browser runtime's to resolve)."""
        if isinstance(self.storage, str):
            if self.storage == "memory":
                return MemoryResumeStore()
            if self.storage == "none":
                return NullResumeStore()
            raise ValueError(
                f"unknown resume storage {self.storage!r} (use 'memory', 'none' or a store)"
            )
        return self.storage


def _json(name: str, conv: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    return {"json": name, "conv": conv}


def _client_info(value: Any) -> dict[str, str]:
    return {str(k): str(x) for k, x in dict(value).items()}


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """Every option of a client connection, with its one default (see the module doc).

    Times are in seconds except in :class:`RetryOptions`/:class:`ResumeOptions`
    (milliseconds, as in the browser API).

    * ``profile``: a registered wire-profile id (``"nimbus.v1"``,
      ``"json-base64.v1"``, ``"lenpfx.v1"``) or a profile object;
    * ``retry``: reconnect backoff; ``resume``: resume storage and TTL
      (``None``: the runtime's default -- memory on CPython,
      ``sessionStorage`` in a page);
    * ``high_water_mark``/``low_water_mark``: ``bufferedAmount`` marks
      (8 MiB / 2 MiB) between which credit is withheld and input waits;
    * ``client_info``: sent in ``hello.client``;
    * ``heartbeat_interval``/``heartbeat_misses``/``handshake_timeout``;
    * ``window``/``max_window`` (credit per channel; ``max_window`` is raised
      to ``window`` when smaller) and ``input_buffer_limit`` (bytes);
    * ``ack``: ask for exactly-once resume (``caps.ack``);
    * ``ping_on_ready``: ping right after ``hello_ok`` so the RTT is known at
      once (on for the runtimes; the bare core machine defaults it off);
    * ``verify_timeout``: seconds a liveness check may take;
      ``suspect_after``: seconds hidden before a page's connection is
      suspect (``None``: the heartbeat interval);
    * ``close_timeout``: seconds ``close()`` waits for the closing handshake.
    """

    profile: str | WireProfile = field(default=_CORE.profile, metadata=_json("profile", str))
    retry: RetryOptions = field(default_factory=RetryOptions)
    resume: ResumeOptions | None = None
    high_water_mark: int = field(
        default=_CORE.high_water_mark, metadata=_json("highWaterMark", int)
    )
    low_water_mark: int = field(default=_CORE.low_water_mark, metadata=_json("lowWaterMark", int))
    client_info: Mapping[str, str] | None = field(
        default=None, metadata=_json("clientInfo", _client_info)
    )
    heartbeat_interval: float = field(
        default=_CORE.heartbeat_interval, metadata=_json("heartbeatIntervalMs", _ms)
    )
    heartbeat_misses: int = field(
        default=_CORE.heartbeat_misses, metadata=_json("heartbeatMisses", int)
    )
    handshake_timeout: float = field(
        default=_CORE.handshake_timeout, metadata=_json("handshakeTimeoutMs", _ms)
    )
    window: int = field(default=_CORE.window, metadata=_json("window", int))
    max_window: int = field(default=_CORE.max_window, metadata=_json("maxWindow", int))
    input_buffer_limit: int = field(
        default=_CORE.input_buffer_limit, metadata=_json("inputBufferLimit", int)
    )
    ack: bool = field(default=_CORE.ack, metadata=_json("ack", bool))
    ping_on_ready: bool = field(default=True, metadata=_json("pingOnReady", bool))
    verify_timeout: float = field(
        default=_CORE.verify_timeout, metadata=_json("verifyTimeoutMs", _ms)
    )
    suspect_after: float | None = field(
        default=_CORE.suspect_after, metadata=_json("suspectAfterMs", _ms)
    )
    close_timeout: float = field(default=5.0, metadata=_json("closeTimeoutMs", _ms))

    @classmethod
    def from_keywords(
        cls, options: ConnectOptions | None = None, **keywords: Any
    ) -> ConnectOptions:
        """``options`` (default: all defaults) with ``keywords`` replacing fields.

        ``None`` for a keyword means its default.  An unknown keyword is a
        ``TypeError``, as for any function.
        """
        base = options if options is not None else cls()
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(f"unknown connect option(s): {', '.join(unknown)}")
        given = {k: v for k, v in keywords.items() if v is not None}
        return dataclasses.replace(base, **given) if given else base

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> tuple[ConnectOptions, dict[str, Any]]:
        """From the facade's JSON options: ``(options, rest)``.

        Every field's camelCase name and unit come from the field; ``retry``
        and ``resume`` are nested objects (``resume.key`` is left in ``rest``
        as ``resumeKey`` for the browser runtime).  Keys that are no field
        are returned in ``rest`` for the caller to use or reject; ``null``
        means "default".
        """
        by_json = {f.metadata["json"]: f for f in fields(cls) if "json" in f.metadata}
        kw: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, v in value.items():
            if v is None:
                continue
            f = by_json.get(key)
            if f is not None:
                kw[f.name] = f.metadata["conv"](v)
            elif key == "retry":
                kw["retry"] = RetryOptions.from_json(v)
            elif key == "resume":
                unknown = sorted(set(v) - {"storage", "ttlMs", "key"})
                if unknown:
                    raise ValueError(f"unknown resume option(s): {', '.join(unknown)}")
                default = ResumeOptions()
                kw["resume"] = ResumeOptions(
                    storage=str(v.get("storage") or "session"),
                    ttl_ms=int(v.get("ttlMs") or default.ttl_ms),
                )
                if v.get("key"):
                    rest["resumeKey"] = str(v["key"])
            else:
                rest[key] = v
        return cls(**kw), rest

    def client_options(self) -> ClientOptions:
        """The core's :class:`~nimbus_websocket.core.ClientOptions` for these options."""
        resume = self.resume or ResumeOptions()
        return ClientOptions(
            profile=self.profile,
            ack=self.ack,
            client_info=dict(self.client_info) if self.client_info else None,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_misses=self.heartbeat_misses,
            handshake_timeout=self.handshake_timeout,
            retry=self.retry.to_policy(),
            window=self.window,
            max_window=self.max_window,
            high_water_mark=self.high_water_mark,
            low_water_mark=self.low_water_mark,
            input_buffer_limit=self.input_buffer_limit,
            resume_ttl=resume.ttl_ms / _MS,
            ping_on_ready=self.ping_on_ready,
            verify_timeout=self.verify_timeout,
            suspect_after=self.suspect_after,
        )


def _from_json(cls: Any, value: Mapping[str, Any], what: str) -> dict[str, Any]:
    by_json = {f.metadata["json"]: f.name for f in fields(cls) if "json" in f.metadata}
    unknown = sorted(set(value) - set(by_json))
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(unknown)}")
    return {by_json[k]: v for k, v in value.items() if v is not None}
