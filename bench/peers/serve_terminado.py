"""terminado's demo server for the peers bench (runs in the peers venv, not the project's).

    build/bench-peers/venv/bin/python bench/peers/serve_terminado.py ARGV_JSON

A tornado app with one route, ``/websocket`` -> ``terminado.TermSocket`` on a
``UniqueTermManager`` (a new terminal running ``ARGV`` per connection, as in
terminado's ``unique.py`` demo).  Prints ``PORT n`` once listening.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import tornado.httpserver
import tornado.web
from terminado import TermSocket, UniqueTermManager


async def main(argv: list[str]) -> None:
    manager = UniqueTermManager(shell_command=argv, max_terminals=1024)
    app = tornado.web.Application([(r"/websocket", TermSocket, {"term_manager": manager})])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.wait_for(stop.wait(), 3600)
    server.stop()
    await manager.shutdown()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
