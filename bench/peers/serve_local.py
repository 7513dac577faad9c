"""A server process for the peers bench: ``nimbus`` (the reference server) or ``bridge``.

    python bench/peers/serve_local.py nimbus|bridge ARGV_JSON

Runs ``ARGV`` on a PTY per connection, prints ``PORT n`` once listening and
serves until SIGTERM.  ``bridge`` is the bare ``websockets`` bridge of
``bench/stream.py`` (binary frames of PTY bytes, nothing else).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def main(kind: str, argv: list[str]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "nimbus":
        from nimbus_websocket.core.server_config import ServerConfig
        from nimbus_websocket.node_runtime.server import Server, ServerOptions

        # 100 idle sessions come from one address and one (anonymous) principal: lift the
        # per-address and per-client caps (64 each); nothing else differs from the defaults.
        cfg = ServerConfig(max_sessions_per_principal=1024, max_sessions_per_peer=1024)
        srv = Server(ServerOptions(port=0, pty_command="exec " + shlex.join(argv), max_connections_per_ip=1024,
                                   max_connections=1024, config=cfg))
        await srv.start()
        print(f"PORT {int(srv.url.split(':')[2].split('/')[0])}", flush=True)
        await asyncio.wait_for(stop.wait(), 3600)
        await srv.stop()
    else:
        from stream import Bridge

        async with Bridge(argv) as url:
            print(f"PORT {int(url.split(':')[2].strip('/'))}", flush=True)
            await asyncio.wait_for(stop.wait(), 3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
