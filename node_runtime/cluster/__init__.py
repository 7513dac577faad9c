"""Beyond one process: instances sharing a session directory in Redis (docs/scale.md).

* :mod:`.directory` -- the Redis directory: instances (heartbeat TTL), sessions
  (retention TTL), per-client counts; re-written every heartbeat;
* :mod:`.secret` -- the cluster secret: resume tokens any instance verifies,
  relay credentials;
* :mod:`.registry` -- the core's session registry with signed tokens, directory
  writes and cluster-wide per-client limits;
* :mod:`.gate` -- the first look at each WebSocket: relay a foreign resume,
  refuse new sessions while draining, else hand it to the session machine;
* :mod:`.relay` -- the instance-to-instance relay (messages unchanged, bounded buffers);
* :mod:`.node` -- one instance: wiring, drain, log identity;
* :mod:`.workers` -- ``--workers N`` on one port (``SO_REUSEPORT``);
* :mod:`.cli` -- the ``nimbus-ws serve`` options.

Nothing here imports ``redis`` at import time (the optional ``cluster`` extra).
"""

from .node import ClusterNode
from .secret import ClusterSecret

__all__ = ["ClusterNode", "ClusterSecret"]
