from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server, ServerOptions

try:  # tests/ as a rootless directory (default) or as a package
    from support.sshd import SshdUnavailable, TestSshd
except ImportError:  # pragma: no cover
    from tests.support.sshd import SshdUnavailable, TestSshd


@pytest.fixture(scope="session")
def sshd() -> Iterator[TestSshd]:
    """A private OpenSSH sshd on 127.0.0.1 for the whole session (see tests/support/sshd.py)."""
    try:
        server = TestSshd().start()
    except SshdUnavailable as e:
        pytest.skip(f"sshd unavailable: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start reference servers on 127.0.0.1:0 with the given options; all stopped at the end."""
    servers: list[Server] = []

    async def make(**kw: Any) -> Server:
        kw.setdefault("port", 0)
        srv = Server(ServerOptions(**kw))
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()
