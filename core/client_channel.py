"""One channel as the client machine keeps it: :class:`ClientChannel`.

Its state moves only through the channel table (``core/state.py``); what the
state allows is asked of the table (:meth:`ClientChannel.can`), never
compared here.  The two rules that need only the channel's own bytes live
here too: where a channel restored from storage starts
(:meth:`ClientChannel.restored`) and where its input resumes after a
reconnect (:meth:`ClientChannel.rewind_input`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .flow import ByteLog, CreditWindow
from .messages import Open
from .resume import StoredChannel
from .state import CHANNEL_TRANSITIONS, ChanEvent, ChannelState, permits

__all__ = ["ClientChannel"]


@dataclass(slots=True, eq=False)
class ClientChannel:
    """Client-side state of one channel (read-only for runtimes)."""

    id: int
    state: ChannelState = ChannelState.OPENING
    open_msg: Open | None = None
    open_sent: bool = False
    resume_key: str | None = None
    credit: CreditWindow = field(default_factory=CreditWindow)
    #: Input not yet acknowledged (with ``caps.ack``) or not yet sent (without).
    tx: ByteLog = field(default_factory=ByteLog)
    tx_sent: int = 0
    #: The last output position acknowledged to the server (``flow.ack``, under ``caps.ack``).
    acked: int = 0
    size: tuple[int, int] | None = None
    size_sent: tuple[int, int] | None = None
    resize_at: float = float("-inf")
    exit: tuple[int | None, str | None] | None = None
    #: The application closed its input; ``eof`` follows the input (again after a resume).
    eof: bool = False
    eof_sent: bool = False

    @classmethod
    def restored(cls, stored: StoredChannel, window: int, max_window: int) -> ClientChannel:
        """The channel as a stored resume state left it: opened, ``stored.rx`` bytes received."""
        rx = stored.rx
        credit = CreditWindow(window, max_window, rx, rx, rx)
        return cls(stored.id, open_sent=True, resume_key=stored.resume_key, credit=credit, acked=rx)

    def can(self, event: ChanEvent) -> bool:
        """Whether the channel table has ``event`` in this channel's state."""
        return permits(CHANNEL_TRANSITIONS, self.state, event)

    @property
    def awaiting_open(self) -> bool:
        """``open_ok`` still to come and not closing (``opening``): output has nobody to go to yet."""
        return self.can(ChanEvent.OPEN_OK) and self.can(ChanEvent.LOCAL_CLOSE)

    @property
    def running(self) -> bool:
        """The remote process runs: input, resizes and signals go out, credit is granted."""
        return self.can(ChanEvent.INPUT)

    @property
    def takes_input(self) -> bool:
        """The application may still send input (running, or ``open_ok`` pending)."""
        return self.running or self.awaiting_open

    def rewind_input(self, rx: int, ack: bool) -> bool:
        """A resume told us the server holds this channel's input up to ``rx``: resend from there.

        With ``caps.ack`` the input from ``rx`` on is resent (``[start, rx)``
        stays kept until acknowledged: the server still holds it unwritten,
        which bounds its input buffer); without, everything not yet sent.
        Returns ``False`` when input between what is kept and ``rx`` is gone
        (the channel cannot resume).  The credit window restarts either way.
        """
        if ack:
            if self.tx.start <= rx <= self.tx.end:
                pass
            elif self.tx.size == 0:
                self.tx.clear(rx)
            else:
                return False
        self.tx_sent = rx if ack else self.tx.start
        self.credit.restart()
        return True
