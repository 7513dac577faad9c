"""Helpers shared by the client tests."""

from __future__ import annotations

try:  # tests/ as a rootless directory (default) or as a package
    from support.waiting import wait_for as wait_for
except ImportError:  # pragma: no cover
    from tests.support.waiting import wait_for as wait_for

import os

TARGET = {"host": "127.0.0.1", "port": 22}


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``)."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
