import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server, ServerOptions

try:  # tests/ as a rootless directory (default) or as a package
    from support.sshd import SshdUnavailable, TestSshd
except ImportError:  # pragma: no cover
    from tests.support.sshd import SshdUnavailable, TestSshd


def _drop_stale_pyenv_lock(max_age: float = 10.0) -> None:
    """Remove pyenv's rehash lock if it is older than any rehash (a killed shell left it).

    The PTY backend starts the user's login shell with a clean environment, so the
    bound above does not reach it: a stale lock would stall every such shell for 60 s.
    A rehash takes well under a second here, and a shell killed in the middle of one
    (closing a channel hangs up its process group) leaves the lock behind; so this runs
    before every test, and a lock older than ``max_age`` is taken as left behind.
    """
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    lock = os.path.join(root, "shims", ".pyenv-shim")
    try:
        if time.time() - os.stat(lock).st_mtime > max_age:
            os.unlink(lock)
    except OSError:
        pass


def pytest_configure(config: pytest.Config) -> None:
    """Undo SIGINT/SIGQUIT ignored at start-up (pytest run as ``cmd &`` from a script, or under ``nohup``).

    Ignored dispositions survive ``exec``: every shell the in-process servers
    spawn, and its jobs, would ignore them too, so the Ctrl-C / ``signal INT``
    tests (tests/server/test_server_pty.py, tests/client, tests/e2e) would fail
    for a reason that has nothing to do with the code under test.  (The local
    PTY backend does not reset them for its sessions -- reported, not fixed here.)
    """
    # Login shells the tests start (the PTY backend's default is the user's login
    # shell) run the user's dotfiles; on this machine root's .bashrc runs `pyenv init`,
    # whose rehash waits up to 60 s for a lock file that a shell killed mid-rehash
    # leaves behind.  Bound that wait (inherited by servers and their shells); the
    # private sshd sets the same for its sessions (tests/support/sshd.py).
    os.environ.setdefault("PYENV_REHASH_TIMEOUT", "1")
    _drop_stale_pyenv_lock()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.hookimpl(trylast=True, specname="pytest_configure")
def pytest_configure_runtime_order(config: pytest.Config) -> None:
    """Run the Pyodide runtimes in a fixed order in every process.

    pytest-pyodide keeps ``--runtime=node,chrome`` in a ``set``, whose order follows
    the string hash seed, which differs between pytest-xdist workers: the workers
    then collect the ``[node]``/``[chrome]`` tests in different orders and xdist
    refuses to run at all.  This runs after pytest-pyodide's own configure hook and
    before collection, which is when the ``runtime`` fixture takes its parameters."""
    try:
        from pytest_pyodide.hook import pytest_wrapper
    except ImportError:
        return
    runtimes = getattr(pytest_wrapper, "pyodide_runtimes", None)
    if runtimes is not None:
        pytest_wrapper.pyodide_runtimes = sorted(runtimes)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test: no stale pyenv lock (see :func:`_drop_stale_pyenv_lock`)."""
    _drop_stale_pyenv_lock()


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
