from collections.abc import Iterator

import pytest

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
