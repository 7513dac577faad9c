"""Limits and negotiation rules of the server machines.

:class:`ServerConfig` holds every tunable of the server side of the
contract, with the contract's defaults; :func:`advertised_subprotocols` and
:func:`select_subprotocol` are the one rule for the WebSocket upgrade's
``Sec-WebSocket-Protocol`` (a runtime calls them, it does not decide).

Memory bounds (PROTOCOL.md section 11 states the same, with the totals).
Per channel: output retained -- sent and not yet acknowledged under
``caps.ack``, plus read and waiting for credit -- at most
``max_retained_output`` (the backend is not read past it, whatever credit
the client granted), plus what the runtime reads after the budget ran out
(the reference PTY backend: under four reads, ``4 * max_read``); input not
yet written to the backend at most ``max_input_buffer`` (else 4007).  That
is about 8.3 MiB with the defaults.  Per connection: ``max_channels``
channels, so ``max_channels * (max_retained_output + 4 * max_read +
max_input_buffer)`` = 33 MiB, plus the socket's ``write_high_water``
(1 MiB, and one read per channel past it) and one incoming frame
(``max_frame``): about 35 MiB.  Per server: ``max_sessions`` sessions (else
4010), each holding its channels' bounds while detached for ``retention``
seconds -- 256 x 35 MiB = about 8.7 GiB at the defaults, for sessions all
driven to their limits on purpose -- and at most ``max_resume_peers`` peers'
failed-resume times (``resume_failure_limit`` floats each).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .profiles import DEFAULT_MAX_FRAME, available_profiles, get_profile

__all__ = ["ServerConfig", "advertised_subprotocols", "allowed_profiles", "select_subprotocol"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Limits and tunables of the server machines; defaults are the contract's."""

    server_name: str = "nimbus-ws/0.1.0"
    #: Profile ids the server accepts (``None``: every registered profile).
    #: Both the upgrade's subprotocol and ``hello.caps.profile`` are chosen from these.
    profiles: tuple[str, ...] | None = None
    #: Largest WebSocket message accepted or sent (bytes; else 4008).
    max_frame: int = DEFAULT_MAX_FRAME
    #: Channels per connection (else 4006).
    max_channels: int = 4
    #: Control messages per second (all but ``flow`` and ``pong``), burst ``control_burst``.
    control_rate: float = 50.0
    control_burst: int = 50
    idle_timeout: float = 60.0
    ping_interval: float = 20.0
    hello_timeout: float = 10.0
    #: Seconds a session whose connection was lost is kept for a resume.
    retention: float = 60.0
    #: Retention of a session without channels (never opened one, or all closed):
    #: a client that only says ``hello`` cannot hold a session slot for a minute.
    empty_retention: float = 5.0
    #: Credit a client may grant beyond what was sent, per channel (else 4007).
    #: The contract's ceiling on what a client may *grant*; what the server
    #: *keeps* is bounded by ``max_retained_output``.
    max_outstanding_credit: int = 16 * 1024 * 1024
    #: Output one channel holds: sent and not yet acknowledged (``caps.ack``)
    #: plus read and waiting for credit.  The backend is not read past it, so
    #: a client that grants credit and never acknowledges stalls its own
    #: channel here instead of growing the server.  Twice the reference
    #: client's largest window (2 MiB), so acknowledging clients never meet it.
    max_retained_output: int = 4 * 1024 * 1024
    #: Offer exactly-once resume (``caps.ack``).
    ack: bool = True
    input_ack_bytes: int = 16 * 1024
    input_ack_delay: float = 0.05
    #: Largest backend read, hence the largest data frame payload (coalescing size).
    max_read: int = 64 * 1024
    #: Largest read of a file channel (``open.file`` get): a file is not an interactive
    #: stream, fewer bigger reads cost less per byte; still within credit and
    #: ``max_retained_output``, so it adds nothing to the memory bounds.
    file_max_read: int = 256 * 1024
    #: The connection's unsent bytes (``bufferedAmount``) above which every
    #: backend of the session stops reading, and below which it reads again:
    #: a client that grants credit but does not read its socket holds at
    #: most this much (plus one read per channel) in the server.
    write_high_water: int = 1024 * 1024
    write_low_water: int = 256 * 1024
    #: Hard bound on a connection's unsent bytes, whatever causes them (pongs to a
    #: ping flood before ``hello``, frames to a peer that stopped reading): past it
    #: the runtime stops *reading* that connection until it drains.  Above
    #: ``write_high_water`` plus one read per channel, so a streaming session never
    #: reaches it.
    max_unsent: int = 2 * 1024 * 1024
    #: Input bytes received but not yet written to a backend, per channel.
    max_input_buffer: int = 4 * 1024 * 1024
    #: Sessions per server, attached or retained (else 4010).  With the
    #: per-session bound above (about 35 MiB) the default caps a server's
    #: worst case at about 8.7 GiB; raise it with the machine.
    max_sessions: int = 256
    #: Sessions one principal, and one peer prefix (``registry.peer_prefix``: an IPv4
    #: address, all of loopback, an IPv6 /64), may hold at once (else 4010): one
    #: client cannot fill the table and refuse everyone else.  ``0``: no bound.
    max_sessions_per_principal: int = 64
    max_sessions_per_peer: int = 64
    #: Honour ``open.command`` [ext] (announced as ``caps.command``).
    allow_command: bool = True
    #: Open file channels (``open.file`` [ext], announced as ``caps.files``).
    #: Off here: the runtime turns it on with a path policy (``FilePolicy``).
    allow_files: bool = False
    #: Make share links of terminal channels (``share`` [ext], announced as ``caps.share``).
    allow_share: bool = False
    #: Wrong secrets tolerated per session before its token is revoked.
    max_resume_failures: int = 5
    #: Failed resumes (4011) tolerated per peer prefix (``registry.peer_prefix``) within
    #: ``resume_failure_window`` seconds; past that, resume attempts from that
    #: peer are refused with 4004 before any lookup (guesses at unknown
    #: sessions, which no per-session revocation stops).
    resume_failure_limit: int = 20
    resume_failure_window: float = 60.0
    #: Peer prefixes whose failed resumes are remembered (about 13 MiB at the
    #: defaults; the one that failed least recently is forgotten first).
    max_resume_peers: int = 10_000


def allowed_profiles(config: ServerConfig) -> tuple[str, ...]:
    """Profile ids ``config`` accepts, in preference order."""
    return config.profiles or available_profiles()


def advertised_subprotocols(config: ServerConfig) -> tuple[str, ...]:
    """The WebSocket subprotocols the server supports, in preference order."""
    return tuple(sp for pid in allowed_profiles(config) for sp in get_profile(pid).subprotocols)


def select_subprotocol(config: ServerConfig, offered: Iterable[str]) -> str | None:
    """The subprotocol to select for a client that offered ``offered``.

    The first offered one of :func:`advertised_subprotocols`; ``None`` when
    none is (then ``nimbus.v1`` decodes ``hello``, PROTOCOL.md section 2).
    """
    known = advertised_subprotocols(config)
    for sp in offered:
        if sp in known:
            return sp
    return None
