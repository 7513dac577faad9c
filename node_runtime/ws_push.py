"""Push delivery of received messages for ``websockets`` asyncio connections.

``websockets`` queues every received message for a reader task
(``recv()`` / ``async for``): one task switch per message.  A connection
class that mixes in :class:`PushMessages` hands each complete message to
its ``push`` callback as soon as the frame is parsed, from the protocol's
``data_received`` -- as a browser calls ``onmessage`` -- which takes that
hop off every keystroke's round trip.  Used by the CPython client
(:mod:`.client.websockets_impl`) and the reference server
(:mod:`.server.app`).

Fragmented messages (which nimbus peers do not send) make a connection fall
back, for good, to the library's queue, so message order is kept either
way: its owner keeps reading with ``async for`` for that case.  Nothing is
buffered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode

__all__ = ["PushMessages"]


class PushMessages:
    """Mixin for a ``websockets.asyncio`` connection class (put it first in the bases)."""

    #: Called with each complete message (``bytes`` or ``str``) while set.
    push: Callable[[str | bytes], None] | None = None
    _queued = False

    def process_event(self, event: Any) -> None:
        """Hand complete data messages to :attr:`push`; everything else to the library."""
        push = self.push
        if push is not None and not self._queued and isinstance(event, Frame):
            op = event.opcode
            if op is Opcode.BINARY or op is Opcode.TEXT:
                if event.fin:
                    if op is Opcode.BINARY:
                        push(bytes(event.data))
                        return
                    try:
                        text = bytes(event.data).decode()
                    except UnicodeDecodeError:
                        conn: Any = self
                        conn.protocol.fail(1007, "invalid UTF-8 in a text message")
                        conn.send_data()  # data_received wrote its output before the events
                        return
                    push(text)
                    return
                self._queued = True
            elif op is Opcode.CONT:
                self._queued = True
        super().process_event(event)  # type: ignore[misc]
