"""nimbus-websocket: interactive SSH terminals over one WebSocket (``nimbus.ssh.v1``).

The package is layered:

* :mod:`nimbus_websocket.core` -- the sans-I/O protocol core (no I/O, no asyncio);
* :mod:`nimbus_websocket.web_runtime` -- the browser client running in Pyodide;
* :mod:`nimbus_websocket.node_runtime` -- the host side: CPython client, reference
  server and conformance kit.

Importing this package imports nothing else, so it loads in Pyodide unchanged.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
