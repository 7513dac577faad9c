"""A WebSocket client in the standard library alone, for attacks run as another local user.

``setpriv --reuid=65534 ...`` runs a process as ``nobody``, which may not be able
to read the project's virtualenv (nor import ``websockets``).  This file has no
import beyond the standard library and runs as a script: a test passes its
*source* with ``python3 -c`` (so the file need not be readable by that user
either), the request as one JSON argument, and reads one JSON object back::

    python3 -c "$(cat rawws.py)" '{"host": "127.0.0.1", "port": 8765, "path": "/ws/ssh",
        "subprotocol": "nimbus.ssh.v1", "origin": null, "send": ["{\\"t\\":\\"hello\\", ...}"],
        "timeout": 10}'
    -> {"status": 101, "frames": ["..."], "close_code": 4003, "close_reason": "...", "uid": 65534}

It does the HTTP upgrade by hand, sends each ``send`` entry as one masked text
frame, then reads server frames until the server closes (answering its close),
``max_frames`` data frames arrived (if given), or ``timeout`` seconds pass
(``close_code`` ``null``).  Also importable:
:func:`run` takes the same dictionary.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import time
from typing import Any


def _frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(sep)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def run(req: dict[str, Any]) -> dict[str, Any]:
    """Connect, upgrade, send, read until the close; see the module docstring."""
    host, port = req.get("host", "127.0.0.1"), int(req["port"])
    timeout = float(req.get("timeout", 10))
    out: dict[str, Any] = {"uid": os.geteuid(), "status": 0, "frames": [], "close_code": None, "close_reason": ""}
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        host_header = req.get("host_header") or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        lines = [
            f"GET {req.get('path', '/ws/ssh')} HTTP/1.1",
            f"Host: {host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if req.get("subprotocol"):
            lines.append(f"Sec-WebSocket-Protocol: {req['subprotocol']}")
        if req.get("origin"):
            lines.append(f"Origin: {req['origin']}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        r = _Reader(sock, deadline)
        try:
            status_line = r.until(b"\r\n\r\n").split(b"\r\n", 1)[0].split(b" ")
            out["status"] = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
            if out["status"] != 101:
                return out
            for text in req.get("send", []):
                sock.sendall(_frame(0x1, text.encode()))
            while True:
                b0, b1 = r.exactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack(">H", r.exactly(2))
                elif n == 127:
                    (n,) = struct.unpack(">Q", r.exactly(8))
                payload = r.exactly(n)  # servers do not mask
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    if len(payload) >= 2:
                        out["close_code"] = struct.unpack(">H", payload[:2])[0]
                        out["close_reason"] = payload[2:].decode(errors="replace")
                    else:
                        out["close_code"] = 1005
                    sock.sendall(_frame(0x8, payload[:2]))
                    return out
                if opcode == 0x9:
                    sock.sendall(_frame(0xA, payload))
                elif opcode in (0x1, 0x2):
                    out["frames"].append(payload.decode(errors="replace"))
                    if len(out["frames"]) >= int(req.get("max_frames", 0) or 1 << 30):
                        return out  # seen what was asked for: no need to wait for a close
        except (TimeoutError, EOFError, OSError) as exc:
            out["error"] = type(exc).__name__
            return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run(json.loads(sys.argv[1]))) + "\n")
