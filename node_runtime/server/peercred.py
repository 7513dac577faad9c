"""Who owns the other end of a loopback TCP connection (issue 13, item 1).

Without a configured token the server lets in only processes of its own user.
For a TCP connection on this machine, the client's socket is an entry of the
kernel's socket table (``/proc/net/tcp`` or ``/proc/net/tcp6``): the entry whose
*local* address is the server's *remote* address and whose *remote* address is
the server's *local* address.  Its ``uid`` column is the socket's owner, its
``inode`` column the socket itself (``0`` for an orphan, e.g. in ``TIME_WAIT``:
such an entry is never trusted).

The table spells addresses as hex digits: an IPv4 address is one 32-bit word,
an IPv6 address four, each word printed as the number the kernel holds in
host byte order (little-endian on x86: ``127.0.0.1`` is ``0100007F``); the port
is four hex digits of the port number itself (``8765`` is ``223D``).

:func:`parse_line` and :func:`find_peer` are pure (unit tested against sample
lines); :func:`peer_uid` reads the tables.  Every failure -- no ``/proc``, an
unreadable file, no matching entry, a peer on another machine or in another
network namespace -- gives ``None``: not trusted.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "SocketEntry",
    "find_peer",
    "format_address",
    "normalize_ip",
    "parse_address",
    "parse_line",
    "peer_uid",
    "tables_for",
]

log = logging.getLogger("nimbus_websocket.server")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(address, port)``, the address IPv4 when it is an IPv4-mapped IPv6 one.
Endpoint = tuple[IP, int]
ByteOrder = Literal["little", "big"]

PROC_NET = "/proc/net"


@dataclass(frozen=True)
class SocketEntry:
    """One row of ``/proc/net/tcp`` or ``/proc/net/tcp6`` (IPv4-mapped addresses as IPv4)."""

    local: Endpoint
    remote: Endpoint
    #: TCP state, the kernel's number (``1`` established, ``10`` listen, ...).
    state: int
    uid: int
    #: ``0`` when no process holds the socket (an orphan): never trusted.
    inode: int


def normalize_ip(address: str | IP) -> IP:
    """``address`` as an :mod:`ipaddress` object; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) as IPv4.

    Raises :class:`ValueError` for anything else (a host name, a scope id is dropped).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_address(text: str, byteorder: ByteOrder = sys.byteorder) -> Endpoint:
    """``"0100007F:223D"`` -> ``(IPv4Address('127.0.0.1'), 8765)`` (``byteorder`` of the words).

    8 hex digits are IPv4, 32 are IPv6 (four words); raises :class:`ValueError` otherwise.
    """
    addr, sep, port = text.partition(":")
    if not sep or len(port) != 4 or len(addr) not in (8, 32):
        raise ValueError(f"not a /proc/net/tcp address: {text!r}")
    raw = b"".join(int(addr[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(addr), 8))
    ip: IP = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    return normalize_ip(ip), int(port, 16)


def parse_line(line: str, byteorder: ByteOrder = sys.byteorder) -> SocketEntry | None:
    """One table row, or ``None`` for the header and anything malformed.

    Columns: ``sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...``.
    """
    f = line.split()
    if len(f) < 10 or not f[0].endswith(":"):
        return None
    try:
        return SocketEntry(
            local=parse_address(f[1], byteorder),
            remote=parse_address(f[2], byteorder),
            state=int(f[3], 16),
            uid=int(f[7]),
            inode=int(f[9]),
        )
    except ValueError:
        return None


def format_address(endpoint: Endpoint, byteorder: ByteOrder = sys.byteorder) -> tuple[str, ...]:
    """The spellings ``endpoint`` has in the tables: IPv4 as 8 hex digits (``tcp``) and as an
    IPv4-mapped IPv6 address (``tcp6``); IPv6 as 32 hex digits.  Upper case, as the kernel prints."""
    ip, port = endpoint
    forms = [ip.packed] if isinstance(ip, ipaddress.IPv6Address) else [ip.packed, b"\0" * 10 + b"\xff\xff" + ip.packed]
    out = []
    for raw in forms:
        words = "".join(f"{int.from_bytes(raw[i : i + 4], byteorder):08X}" for i in range(0, len(raw), 4))
        out.append(f"{words}:{port:04X}")
    return tuple(out)


def find_peer(
    lines: Iterable[str], server_local: Endpoint, server_remote: Endpoint, byteorder: ByteOrder = sys.byteorder
) -> SocketEntry | None:
    """The client's entry in ``lines``: local = the server's remote, remote = the server's local.

    Entries without an inode (orphans) are skipped.  Stops at the first match.  Rows are
    compared as text first (the address columns' spellings, :func:`format_address`) and
    only a candidate is parsed: a table of thousands of sockets costs little more than its read.
    """
    want_local = set(format_address(server_remote, byteorder))
    want_remote = set(format_address(server_local, byteorder))
    for line in lines:
        f = line.split(None, 3)
        if len(f) < 3 or f[1].upper() not in want_local or f[2].upper() not in want_remote:
            continue
        e = parse_line(line, byteorder)
        if e is not None and e.inode and e.local == server_remote and e.remote == server_local:
            return e
    return None


def tables_for(server_local: Endpoint, server_remote: Endpoint) -> tuple[str, ...]:
    """The table names to search, most likely first.

    An IPv4 (or IPv4-mapped) connection's client socket is in ``tcp`` when the
    client made an IPv4 socket, in ``tcp6`` (with mapped addresses) when it made a
    dual-stack IPv6 one; a pure IPv6 connection is only in ``tcp6``.
    """
    if isinstance(server_local[0], ipaddress.IPv4Address) and isinstance(server_remote[0], ipaddress.IPv4Address):
        return ("tcp", "tcp6")
    return ("tcp6",)


def _endpoint(sockaddr: object) -> Endpoint:
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        raise ValueError(f"not an IP socket address: {sockaddr!r}")
    return normalize_ip(str(sockaddr[0])), int(sockaddr[1])


def peer_uid(sockname: object, peername: object, proc_net: str = PROC_NET) -> int | None:
    """The UID owning the client socket of the connection ``sockname`` <- ``peername``.

    ``sockname``/``peername`` are the accepted socket's ``getsockname()`` and
    ``getpeername()``.  Reads only the table(s) the addresses call for, line by
    line, and stops at the match.  ``None`` when it cannot tell (not trusted).
    Blocking: a server calls it in a worker thread.
    """
    try:
        local, remote = _endpoint(sockname), _endpoint(peername)
    except ValueError:
        return None
    for name in tables_for(local, remote):
        try:
            with open(f"{proc_net}/{name}", encoding="ascii", errors="replace") as f:
                next(f, None)  # the header
                entry = find_peer(f, local, remote)
        except OSError as exc:
            log.debug("socket table unreadable", extra={"event": "peercred_unreadable", "table": name, "error": str(exc)})
            continue
        if entry is not None:
            return entry.uid
    return None
