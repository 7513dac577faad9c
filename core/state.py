"""Connection and channel state machines, as tables.

Two rules, after h11's ``_state.py``: everything that moves a state machine
lives in this file, and a missing table entry *is* the protocol error --
:func:`transition` raises :class:`IllegalTransition` naming the state and the
event.  The session machines (``client.py``, ``server.py``) decide *which*
event happened; only these tables decide where it leads.
"""

from __future__ import annotations

import enum

from .errors import IllegalTransition

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "ChannelState",
    "ConnEvent",
    "ConnState",
    "IllegalTransition",
    "ChanEvent",
    "transition",
]


class ConnState(enum.StrEnum):
    """Connection states (``protocol.md`` section 7); the value is the public name."""

    IDLE = "idle"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class ConnEvent(enum.StrEnum):
    """What can happen to a connection."""

    CONNECT = "connect"  # the application asked to connect
    OPENED = "opened"  # the WebSocket opened; hello goes out
    ACCEPTED = "accepted"  # hello_ok arrived (fresh or resumed session)
    LOST = "lost"  # transport lost, resumable: try again with backoff
    FAILED = "failed"  # terminal: auth, protocol error, resume refused, retries exhausted
    CLOSE = "close"  # the application closed the connection


CONNECTION_TRANSITIONS: dict[ConnState, dict[ConnEvent, ConnState]] = {
    ConnState.IDLE: {
        ConnEvent.CONNECT: ConnState.CONNECTING,
        ConnEvent.CLOSE: ConnState.CLOSED,
    },
    ConnState.CONNECTING: {
        ConnEvent.OPENED: ConnState.AUTHENTICATING,
        ConnEvent.LOST: ConnState.RECONNECTING,  # resumable (stored state after a reload): retry
        ConnEvent.FAILED: ConnState.CLOSED,
        ConnEvent.CLOSE: ConnState.CLOSED,
    },
    ConnState.AUTHENTICATING: {
        ConnEvent.ACCEPTED: ConnState.READY,
        ConnEvent.LOST: ConnState.RECONNECTING,
        ConnEvent.FAILED: ConnState.CLOSED,
        ConnEvent.CLOSE: ConnState.CLOSED,
    },
    ConnState.READY: {
        ConnEvent.LOST: ConnState.RECONNECTING,
        ConnEvent.FAILED: ConnState.CLOSED,
        ConnEvent.CLOSE: ConnState.CLOSED,
    },
    ConnState.RECONNECTING: {
        ConnEvent.OPENED: ConnState.AUTHENTICATING,
        ConnEvent.LOST: ConnState.RECONNECTING,
        ConnEvent.FAILED: ConnState.CLOSED,
        ConnEvent.CLOSE: ConnState.CLOSED,
    },
    ConnState.CLOSED: {},
}


class ChannelState(enum.StrEnum):
    """Channel states: ``open -> open_ok -> (data|resize|signal)* -> exit -> close``."""

    OPENING = "opening"  # open sent (client) / backend starting (server)
    OPEN = "open"
    EXITED = "exited"  # exit seen; remaining output delivered; waiting for close
    CLOSING = "closing"  # our close is sent; waiting for the peer's
    CLOSED = "closed"


class ChanEvent(enum.StrEnum):
    """What can happen to a channel."""

    OPEN_OK = "open_ok"
    OPEN_ERR = "open_err"
    EXIT = "exit"
    LOCAL_CLOSE = "local_close"  # we send close
    PEER_CLOSE = "peer_close"  # the peer's close arrived
    LOST = "lost"  # the channel did not survive a reconnect


CHANNEL_TRANSITIONS: dict[ChannelState, dict[ChanEvent, ChannelState]] = {
    ChannelState.OPENING: {
        ChanEvent.OPEN_OK: ChannelState.OPEN,
        ChanEvent.OPEN_ERR: ChannelState.CLOSED,
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.LOST: ChannelState.CLOSED,
    },
    ChannelState.OPEN: {
        ChanEvent.EXIT: ChannelState.EXITED,
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,
        ChanEvent.LOST: ChannelState.CLOSED,
    },
    ChannelState.EXITED: {
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,
        ChanEvent.LOST: ChannelState.CLOSED,
    },
    ChannelState.CLOSING: {
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,
        ChanEvent.EXIT: ChannelState.CLOSING,
        ChanEvent.OPEN_OK: ChannelState.CLOSING,
        ChanEvent.OPEN_ERR: ChannelState.CLOSED,
        ChanEvent.LOST: ChannelState.CLOSED,
    },
    ChannelState.CLOSED: {},
}


def transition(
    table: dict[ConnState, dict[ConnEvent, ConnState]]
    | dict[ChannelState, dict[ChanEvent, ChannelState]],
    state: ConnState | ChannelState,
    event: ConnEvent | ChanEvent,
) -> ConnState | ChannelState:
    """Return the state ``event`` leads to from ``state``; raise if the table has none."""
    row: dict[ConnEvent | ChanEvent, ConnState | ChannelState] = table[state]  # type: ignore[index,assignment]
    try:
        return row[event]
    except KeyError:
        machine = "connection" if isinstance(state, ConnState) else "channel"
        raise IllegalTransition(machine, state.value, event.value) from None
