"""The reference server: ``websockets`` + the core's server machines + PTY/SSH backends."""

from .app import Server, ServerOptions
from .backend import Backend, BackendError, BackendSink, LocalProcessBackend
from .policy import AuthPolicy, OriginPolicy, TargetPolicy
from .ssh_backend import SshOptions

__all__ = [
    "AuthPolicy",
    "Backend",
    "BackendError",
    "BackendSink",
    "LocalProcessBackend",
    "OriginPolicy",
    "Server",
    "ServerOptions",
    "SshOptions",
    "TargetPolicy",
]
