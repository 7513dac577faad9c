"""Running behind a reverse proxy: the URL prefix and the client's address.

Pure functions, no I/O (unit-tested in ``tests/server/test_proxy.py``):

* :func:`normalize_base_path` -- the ``--base-path`` prefix everything is
  served under (``/term/``), checked and written with both slashes;
* :class:`TrustedProxies` -- ``--trust-proxy`` addresses and networks, and
  :meth:`TrustedProxies.client_address`, the client a request came from:
  the TCP peer, or -- only when that peer is a trusted proxy -- the
  right-most ``X-Forwarded-For`` address that is not itself a trusted proxy.

Why the right-most: every proxy *appends* the address it received the
request from; the entries left of the last trusted proxy's were written by
whoever sent the request, so they can be anything.  Walking from the right
and stopping at the first address no trusted proxy could have written gives
the one address an attacker cannot choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["TrustedProxies", "normalize_base_path", "parse_address"]

#: ``X-Forwarded-For`` entries looked at, right to left (a chain of proxies is short;
#: the header's length is already bounded by the HTTP parser).
MAX_FORWARDED_HOPS = 32

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalize_base_path(path: str) -> str:
    """``path`` as the URL prefix the server answers under: ``/`` or ``/a/b/``.

    A missing leading or trailing slash is added (``term`` -> ``/term/``).
    Raises :class:`ValueError` for what cannot be a literal path prefix: a
    query or fragment, percent-escapes, ``.``/``..`` or empty segments,
    whitespace or control characters.
    """
    text = path.strip()
    if not text or text == "/":
        return "/"
    if any(c in text for c in "?#%\\") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValueError(f"base path {path!r} must be a plain path such as /term/ (no ?, #, %, spaces or controls)")
    inner = text.removeprefix("/").removesuffix("/")
    segments = inner.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"base path {path!r} must not hold empty, '.' or '..' segments")
    return f"/{inner}/"


def parse_address(text: str) -> _Address | None:
    """The IP address an ``X-Forwarded-For`` entry or a peer name holds, or ``None``.

    Accepts ``192.0.2.7``, ``2001:db8::1``, ``[2001:db8::1]``, ``[2001:db8::1]:443``,
    ``192.0.2.7:5678`` and a zone id (``fe80::1%eth0``, dropped); an IPv4-mapped
    IPv6 address (``::ffff:192.0.2.7``, a dual-stack socket) is its IPv4 address.
    """
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port
        s = s.split(":", 1)[0]
    s = s.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (``--trust-proxy``, repeatable).

    Each entry is an exact address (``127.0.0.1``, ``::1``) or a network in CIDR
    notation (``10.0.0.0/8``, ``fd00::/8``); host bits of a network are ignored.
    Empty (the default): ``X-Forwarded-For`` is never believed.
    """

    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Raises :class:`ValueError` naming an entry that is no address or network."""
        nets: list[_Network] = []
        for entry in entries:
            text = entry.strip()
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"--trust-proxy {entry!r} is not an IP address or network (CIDR)") from None
            if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
                mapped = net.network_address.ipv4_mapped
                if mapped is not None:  # ::ffff:10.0.0.1 names the IPv4 proxy
                    net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
            nets.append(net)
        return cls(tuple(dict.fromkeys(nets)))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | _Address | None) -> bool:
        """True if ``address`` (a peer name or an address) is one of the trusted proxies."""
        addr = parse_address(address) if isinstance(address, str) else address
        if addr is None:
            return False
        return any(addr.version == net.version and addr in net for net in self.networks)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address for a request whose TCP peer is ``peer``.

        ``forwarded_for`` holds the request's ``X-Forwarded-For`` header values in
        the order received (several headers read as one comma-separated list).
        Unless ``peer`` is trusted, ``peer`` itself.  Otherwise the right-most entry
        that is not a trusted proxy; when every entry is trusted, the left-most one;
        when that entry is not an IP address (``unknown``, garbage), the nearest
        trusted hop to its right (or ``peer``) -- the address a trusted proxy wrote.
        """
        if not self.trusts(peer):
            return peer
        entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
        hop = peer
        for entry in reversed(entries[-MAX_FORWARDED_HOPS:]):
            addr = parse_address(entry)
            if addr is None:
                return hop
            hop = str(addr)
            if not self.trusts(addr):
                return hop
        return hop
