"""Peers in ``make bench``: nimbus against terminado, webssh, wetty and the bare bridge.

Every peer runs as its own server process, on the same shell command and the
same PTY settings, driven by one wire client per protocol (all on the
``websockets`` client library, ``bench/peers/clients.py``), runs interleaved
peer by peer.  The peers are installed by the bench itself into
``build/bench-peers/`` (a venv for terminado and webssh, an npm prefix for
wetty), never into the project's dependencies (``bench/peers/install.py``).

    .venv/bin/python bench/peers/runner.py [--quick]      # this section alone, prints its table

``bench/run.py`` runs it as its ``peers`` section (``--no-peers`` to skip).
"""
