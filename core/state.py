"""Connection and channel state machines, as tables.

Two rules, after h11's ``_state.py``: everything that moves a state machine
lives in this file, and a missing table entry *is* the protocol error --
:func:`transition` raises :class:`IllegalTransition` naming the state and the
event.  The session machines (``client.py``, ``server.py``) decide *which*
event happened; only these tables decide where it leads.  Nothing here knows
which role it plays: a table row holds for whichever side runs the machine.

Three machines:

* :data:`CONNECTION_TRANSITIONS` -- the connecting side's connection
  (``idle -> connecting -> authenticating -> ready``, reconnects);
* :data:`PHASE_TRANSITIONS` -- the answering side's connection phases
  (``hello -> auth -> ready -> closed``, ``protocol.md`` section 9); a message
  the phase has no row for is the contract's 4002;
* :data:`CHANNEL_TRANSITIONS` -- one channel, on either side.

Some rows are self-loops (``ready --message--> ready``, ``open --input-->
open``): they say what a state *allows*.  A machine asks the table
(:func:`transition`, or :func:`permits` for a question without a move)
instead of comparing states itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from .errors import IllegalTransition

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "PHASE_TRANSITIONS",
    "ChanEvent",
    "ChannelState",
    "ConnEvent",
    "ConnPhase",
    "ConnState",
    "IllegalTransition",
    "PhaseEvent",
    "permits",
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


class ConnPhase(enum.StrEnum):
    """Phases of the answering side's connection (``protocol.md`` section 9)."""

    HELLO = "hello"  # waiting for hello
    AUTH = "auth"  # waiting for the authenticator; the peer must be silent
    READY = "ready"  # hello_ok sent; messages flow
    CLOSED = "closed"  # close decided or transport gone; input is read and discarded


class PhaseEvent(enum.StrEnum):
    """What can happen to an answering connection."""

    HELLO = "hello"  # a hello arrived
    MESSAGE = "message"  # any other message arrived
    ACCEPTED = "accepted"  # authenticated and the session bound: hello_ok goes out
    CLOSE = "close"  # the connection closes (our close, or the transport ended)


#: A missing row is the contract's 4002 on peer input: anything but hello
#: first, anything while authentication is pending, a second hello.
PHASE_TRANSITIONS: dict[ConnPhase, dict[PhaseEvent, ConnPhase]] = {
    ConnPhase.HELLO: {
        PhaseEvent.HELLO: ConnPhase.AUTH,
        PhaseEvent.CLOSE: ConnPhase.CLOSED,
    },
    ConnPhase.AUTH: {
        PhaseEvent.ACCEPTED: ConnPhase.READY,
        PhaseEvent.CLOSE: ConnPhase.CLOSED,
    },
    ConnPhase.READY: {
        PhaseEvent.MESSAGE: ConnPhase.READY,
        PhaseEvent.CLOSE: ConnPhase.CLOSED,
    },
    ConnPhase.CLOSED: {},
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
    # Self-loops: what a state allows.
    INPUT = "input"  # stdin, resize, signal or eof for the process: only while it runs
    READ = "read"  # the process's output is read (or its reading paused): only while it runs
    OUTPUT = "output"  # output already read is delivered: also after exit, until the close


CHANNEL_TRANSITIONS: dict[ChannelState, dict[ChanEvent, ChannelState]] = {
    ChannelState.OPENING: {
        ChanEvent.OPEN_OK: ChannelState.OPEN,
        ChanEvent.OPEN_ERR: ChannelState.CLOSED,
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,  # the peer gave up before open_ok
        ChanEvent.LOST: ChannelState.CLOSED,
    },
    ChannelState.OPEN: {
        ChanEvent.EXIT: ChannelState.EXITED,
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,
        ChanEvent.LOST: ChannelState.CLOSED,
        ChanEvent.INPUT: ChannelState.OPEN,
        ChanEvent.READ: ChannelState.OPEN,
        ChanEvent.OUTPUT: ChannelState.OPEN,
    },
    ChannelState.EXITED: {
        ChanEvent.LOCAL_CLOSE: ChannelState.CLOSING,
        ChanEvent.PEER_CLOSE: ChannelState.CLOSED,
        ChanEvent.LOST: ChannelState.CLOSED,
        ChanEvent.OUTPUT: ChannelState.EXITED,
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


S = TypeVar("S", bound=enum.StrEnum)
E = TypeVar("E", bound=enum.StrEnum)

#: The name each machine's :class:`IllegalTransition` carries, by state type.
_MACHINES: dict[type[enum.StrEnum], str] = {
    ConnState: "connection",
    ConnPhase: "phase",
    ChannelState: "channel",
}


def transition(table: Mapping[S, Mapping[E, S]], state: S, event: E) -> S:
    """Return the state ``event`` leads to from ``state``; raise if the table has none.

    The miss raises :class:`IllegalTransition` naming the machine, the state
    and the event.  The function is pure: the caller assigns the result, so
    it can validate between asking and moving.
    """
    try:
        return table[state][event]
    except KeyError:
        machine = _MACHINES.get(type(state), type(state).__name__)
        raise IllegalTransition(machine, state.value, event.value) from None


def permits(table: Mapping[S, Mapping[E, S]], state: S, event: E) -> bool:
    """True when ``table`` has a move for ``event`` in ``state`` (a question, no move)."""
    return event in table[state]
