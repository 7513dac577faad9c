"""The SSH backend: each channel is an asyncssh client session to ``open.target``.

``open.user.auth`` must name its method (a missing ``type`` is ``open_err``
``AUTH_FAILED``): ``{"type": "password", "password": ...}``, ``{"type": "key",
"private_key": "<PEM or OpenSSH text>", "passphrase"?: ...}``, or
``{"type": "agent"}``.  Only the client's own credentials are ever offered
(issue 13.3): asyncssh is told not to read ``~/.ssh/config``, the server's
``~/.ssh/id_*``, its ``$SSH_AUTH_SOCK`` agent, PKCS#11, GSSAPI tickets or
host-based keys.  ``agent`` -- the *server's* agent and default keys -- is
refused unless the operator listed the target in
:attr:`SshOptions.server_credentials` (``--ssh-server-credentials``).  A key's
decryption cost is capped and it is decrypted off the event loop
(:mod:`.ssh_keys`, issue 13.4).  Host keys are checked against
``known_hosts`` unless the server was started with the explicit insecure flag
(tests only); a refused key is never accepted, and the client learns its type
and SHA256 fingerprint and whether known_hosts had *another* key for the
target (``HOST_KEY_CHANGED``: possibly a man in the middle) or none
(``HOST_KEY_UNKNOWN``) -- nothing else of known_hosts (issue 15.7).  Connection refused, timeouts and peers that are not SSH
servers all answer the client the same ``TARGET_UNREACHABLE`` text; the
details go to the server log (issue 13.13).

Output reading follows credit through asyncssh's ``pause_reading`` /
``resume_reading`` (the SSH window then stops the remote producer).
``INT``/``QUIT``/``TSTP`` on a PTY are sent as the terminal's control
characters (what Ctrl-C does: OpenSSH ignores the ``signal`` request for
many sessions); other signals use the SSH ``signal`` request.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from ...core.errors import HOST_KEY_TYPE_MAX, HostKey
from ...core.messages import Stream, Target, Term, User
from .backend import BackendError, BackendSink, filter_term_env
from .policy import TargetPolicy
from .ssh_keys import KeyCaps, KeyLoader, KeyRefused

__all__ = ["UNREACHABLE_MESSAGE", "SshBackend", "SshOptions"]

log = logging.getLogger("nimbus_websocket.server.ssh")

#: The SSH channel window: what the remote may send ahead of our reads.  It
#: is what is in flight when Ctrl-C is pressed under a flood: asyncssh's
#: default 2 MiB made the demo's prompt take seconds; with 256 KiB it took
#: 0.2-1.1 s (1 run in 6 over 1 s) under `yes` in Chromium on 2 cores; with
#: 128 KiB 0.14-0.37 s (12 runs).  The SSH hop is normally a LAN one, where
#: 128 KiB is not what limits a stream.
SSH_WINDOW = 128 * 1024

#: What the client hears for every target that could not be reached as an SSH
#: server -- refused, timed out, closed, or not speaking SSH -- so that the
#: answers do not map the target's ports (the log has the real reason).
UNREACHABLE_MESSAGE = "target unreachable"

_PTY_CHARS = {"INT": b"\x03", "QUIT": b"\x1c", "TSTP": b"\x1a"}


def _cpu_has_aes(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU announces AES instructions (x86 ``aes`` flag, ARM ``aes`` feature)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return "aes" in line.split(":", 1)[-1].split()
    except OSError:
        pass
    return False


#: The ciphers offered, best first.  asyncssh's default puts chacha20-poly1305
#: first (OpenSSH's choice for CPUs without AES instructions), and asyncssh does
#: it as a ChaCha20 call plus a Poly1305 call plus Python framing per packet; the
#: AES-GCM modes are one OpenSSL call each, constant-time with AES-NI.  Measured
#: with asyncssh alone on SFTP to the private sshd, 100 MB: chacha20-poly1305
#: get ~245 / put ~173 MB/s, aes128-gcm get ~360 / put ~318 MB/s.  So where the
#: CPU has AES instructions AES-GCM goes first; chacha20 stays offered (a server
#: that allows only it still connects).  Everything else is asyncssh's default.
ENCRYPTION_ALGS: tuple[str, ...] = (
    ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr")
    if _cpu_has_aes()
    else ()
)

#: Every asyncssh source of credentials other than what the client sent is off.
_NO_AMBIENT_CREDENTIALS: dict[str, Any] = {
    "config": None,  # no ~/.ssh/config (IdentityFile, IdentityAgent, ProxyCommand ...)
    "agent_path": None,  # no $SSH_AUTH_SOCK
    "agent_identities": None,
    "agent_forwarding": False,
    "client_keys": None,  # no ~/.ssh/id_*
    "client_host_keysign": False,
    "client_host_keys": None,
    "host_based_auth": False,
    "pkcs11_provider": None,
    "gss_auth": False,  # no Kerberos ticket of the server's user
    "gss_kex": False,
    "password": None,
}


#: ``ssh-keygen -l``'s names of the SSH public-key algorithms (what a user compares).
_KEY_TYPES = {
    "ssh-ed25519": "ED25519",
    "ssh-ed448": "ED448",
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}


def _key_type(algorithm: str) -> str:
    """``ssh-ed25519`` -> ``ED25519``, ``ecdsa-sha2-nistp256`` -> ``ECDSA`` (as ``ssh-keygen -l``)."""
    if algorithm.startswith("ecdsa-sha2-"):
        return "ECDSA"
    return _KEY_TYPES.get(algorithm, algorithm)[:HOST_KEY_TYPE_MAX]


def _hostport(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port or 22}"


class _HostKeyWitness(asyncssh.SSHClient):
    """Notes the host key a target offered that known_hosts does not trust, and refuses it.

    asyncssh asks :meth:`validate_host_public_key` only for a key that no
    known_hosts entry trusts; the answer is always no.
    """

    def __init__(self) -> None:
        self.offered: tuple[str, str, int | None, asyncssh.SSHKey] | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = (host, addr, None if port == 22 else port, key)
        return False


def _load_known_hosts(path: str | None) -> asyncssh.SSHKnownHosts:
    """The operator's known_hosts (``path``, or the server user's ``~/.ssh/known_hosts``, as asyncssh)."""
    if path:
        return asyncssh.read_known_hosts(path)
    default = Path("~", ".ssh", "known_hosts").expanduser()
    if default.is_file() and os.access(default, os.R_OK):
        return asyncssh.read_known_hosts(str(default))
    return asyncssh.SSHKnownHosts()


def _credential_rule(rule: str) -> tuple[str, TargetPolicy]:
    """``[USER@]HOST:PORT`` (``*`` wildcards) -> (user or ``*``, a one-rule target policy)."""
    user, at, hostport = rule.rpartition("@")
    if not at:
        user = "*"
    host, colon, port = hostport.rpartition(":")
    if (
        not colon
        or (host.count(":") and not (host.startswith("[") and host.endswith("]")))  # IPv6 goes in brackets
        or not host.strip("[]")
        or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536))
        or (at and not user)
    ):
        raise ValueError(f"bad server-credentials rule {rule!r} (want [USER@]HOST:PORT, * wildcards)")
    return user, TargetPolicy([hostport])


class SshOptions:
    """Host-key policy, timeouts and credential rules for the SSH backend.

    ``server_credentials``: ``[USER@]HOST:PORT`` rules (``*`` for any user,
    host or port) naming the targets where a client's ``{"type": "agent"}``
    may log in with *this server's* SSH identity: its agent
    (``$SSH_AUTH_SOCK``) and its default keys (``~/.ssh/id_*``).  Empty (the
    default): nobody gets the server's identity.  The target must also pass
    the target allow-list.

    ``key_caps`` / ``key_concurrency``: limits on client-supplied private keys
    (:mod:`.ssh_keys`).
    """

    def __init__(
        self,
        known_hosts: str | None = None,
        insecure_ignore_host_keys: bool = False,
        connect_timeout: float = 10.0,
        server_credentials: Sequence[str] = (),
        key_caps: KeyCaps | None = None,
        key_concurrency: int = 2,
    ) -> None:
        self.known_hosts = known_hosts
        self.insecure = insecure_ignore_host_keys
        self.connect_timeout = connect_timeout
        self.server_credentials = tuple(server_credentials)
        self._credential_rules = [_credential_rule(r) for r in self.server_credentials]
        self.keys = KeyLoader(key_caps, key_concurrency)

    def server_credentials_allowed(self, target: Target, username: str) -> bool:
        """True if ``username`` at ``target`` may use the server's own agent and keys."""
        return any((u == "*" or u == username) and p.allows(target) for u, p in self._credential_rules)


class _Session(asyncssh.SSHClientSession[bytes]):
    def __init__(self, backend: SshBackend) -> None:
        self.backend = backend

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        stream: Stream = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        self.backend._output(stream, data)

    def exit_status_received(self, status: int) -> None:
        self.backend._exit = (status, None)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.backend._exit = (None, signal)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend._lost()

    def pause_writing(self) -> None:
        self.backend._write_paused = True

    def resume_writing(self) -> None:
        self.backend._write_paused = False
        self.backend._release_input()


class SshBackend:
    """One channel over asyncssh (connection per channel, PTY when ``term`` is given)."""

    def __init__(
        self,
        sink: BackendSink,
        target: Target,
        user: User,
        term: Term | None,
        options: SshOptions,
        command: str | None = None,
    ) -> None:
        self.sink = sink
        self.target = target
        self.user = user
        self.term = term
        self.options = options
        self.command = command
        self._conn: asyncssh.SSHClientConnection | None = None
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._exit: tuple[int | None, str | None] | None = None
        self._reported = False
        self._paused = True
        self._write_paused = False
        self._unacked = 0
        self._closed = False

    async def start(self) -> None:
        """Connect, authenticate and open the session (``BackendError`` on failure)."""
        conn = await self.connect()
        try:
            pty: dict[str, Any] = {}
            if self.term is not None:
                pty = {
                    "term_type": self.term.env.get("TERM", "xterm-256color"),
                    "term_size": (self.term.cols, self.term.rows),
                    "env": {k: v for k, v in filter_term_env(self.term.env)[0].items() if k != "TERM"},
                }
            self._chan, _ = await conn.create_session(
                lambda: _Session(self), self.command, encoding=None, window=SSH_WINDOW, **pty
            )
        except (OSError, asyncssh.Error) as exc:
            conn.close()
            raise BackendError("BACKEND_FAILED", f"SSH session refused: {exc}") from None
        self._chan.pause_reading()

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The SSH connection while it is up (file channels open SFTP on it)."""
        return None if self._closed else self._conn

    async def connect(self) -> asyncssh.SSHClientConnection:
        """Connect and authenticate only (``BackendError`` on failure); the connection stays :attr:`connection`."""
        where = f"{self.target.host}:{self.target.port}"
        witness = _HostKeyWitness()
        kw: dict[str, Any] = {
            "host": self.target.host,
            "port": self.target.port or 22,
            "username": self.user.username,
            "connect_timeout": self.options.connect_timeout,
            "client_factory": lambda: witness,
            **_NO_AMBIENT_CREDENTIALS,
        }
        if ENCRYPTION_ALGS:
            kw["encryption_algs"] = list(ENCRYPTION_ALGS)
        kw.update(await self._credentials())
        known: asyncssh.SSHKnownHosts | None = None
        try:
            if not self.options.insecure:
                # Read once: the same entries decide trust and, on a refusal, known vs changed.
                known = kw["known_hosts"] = _load_known_hosts(self.options.known_hosts)
            else:
                kw["known_hosts"] = None
            self._conn = await asyncssh.connect(**kw)
        except asyncssh.PermissionDenied:
            raise BackendError("AUTH_FAILED", "SSH authentication failed") from None
        except asyncssh.HostKeyNotVerifiable:
            raise self._host_key_refused(witness, known) from None
        except (TimeoutError, OSError, asyncssh.Error, ValueError) as exc:
            # One line, no traceback; the client learns nothing about the port.
            log.warning(
                "ssh target unreachable",
                extra={"event": "ssh_unreachable", "target": where, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            raise BackendError("TARGET_UNREACHABLE", UNREACHABLE_MESSAGE) from None
        return self._conn

    def _host_key_refused(self, witness: _HostKeyWitness, known: asyncssh.SSHKnownHosts | None) -> BackendError:
        """The ``open_err`` for a refused host key: changed or unknown, with the offered key.

        Only whether known_hosts had a key for the target is told, never which.
        A key asyncssh refused before asking (a ``@revoked`` one) has no witness:
        the plain ``HOST_KEY_UNKNOWN``.
        """
        where = _hostport(self.target)
        if witness.offered is None or known is None:
            log.warning("ssh host key refused", extra={"event": "ssh_host_key_refused", "target": where})
            return BackendError("HOST_KEY_UNKNOWN", "SSH host key not trusted")
        host, addr, port, key = witness.offered
        trusted, cas, *_ = known.match(host, addr, port)
        info = HostKey(_key_type(key.get_algorithm()), key.get_fingerprint("sha256"), bool(trusted or cas), where)
        log.warning(
            "ssh host key changed" if info.known else "ssh host key unknown",
            extra={
                "event": "ssh_host_key_changed" if info.known else "ssh_host_key_unknown",
                "target": where,
                "key_type": info.key_type,
                "fingerprint": info.fingerprint,
            },
        )
        offered = f"{info.key_type} {info.fingerprint}"
        if info.known:
            msg = f"SSH host key of {where} does not match known_hosts (possible man in the middle); offered {offered}"
        else:
            msg = f"SSH host key of {where} is not in known_hosts; offered {offered}"
        return BackendError(info.code, msg, info)

    async def _credentials(self) -> dict[str, Any]:
        """The ``asyncssh.connect`` keywords for the client's ``auth`` (and only what it sent)."""
        auth = self.user.auth
        kind = auth.get("type")
        if kind is None:
            raise BackendError("AUTH_FAILED", "auth type required: password, key or agent")
        if kind == "password":
            password = auth.get("password")
            if not isinstance(password, str):
                raise BackendError("AUTH_FAILED", "password auth needs a password string")
            return {
                "password": password,
                "preferred_auth": "password,keyboard-interactive",
                "public_key_auth": False,
            }
        if kind == "key":
            passphrase = auth.get("passphrase")
            try:
                key = await self.options.keys.load(auth.get("private_key", ""), passphrase)
            except KeyRefused as exc:
                raise BackendError("AUTH_FAILED", str(exc)) from None
            return {
                "client_keys": [key],
                "preferred_auth": "publickey",
                "password_auth": False,
                "kbdint_auth": False,
            }
        if kind == "agent":
            if not self.options.server_credentials_allowed(self.target, self.user.username):
                raise BackendError(
                    "POLICY_DENIED", "agent auth (the server's own SSH credentials) is not enabled for this target"
                )
            log.info(
                "server credentials used",
                extra={"event": "ssh_server_credentials", "target": f"{self.target.host}:{self.target.port}", "user": self.user.username},
            )
            # The operator's explicit choice: their agent and default keys (not ~/.ssh/config).
            return {
                "agent_path": (),
                "agent_identities": (),
                "client_keys": (),
                "preferred_auth": "publickey",
                "password_auth": False,
                "kbdint_auth": False,
            }
        raise BackendError("AUTH_FAILED", f"unknown auth type {str(kind)[:32]!r}")

    def _output(self, stream: Stream, data: bytes) -> None:
        self.sink.output(stream, data)
        if self.sink.read_budget() <= 0:
            self.pause(True)

    def _lost(self) -> None:
        if not self._reported and not self._closed:
            self._reported = True
            code, sig = self._exit or (None, None)
            self.sink.exited(code, sig)

    def write(self, data: bytes) -> None:
        """Send input; acknowledged once asyncssh's send buffer accepts more."""
        if self._chan is None or self._closed:
            self.sink.input_written(len(data))
            return
        self._chan.write(data)
        if self._write_paused:
            self._unacked += len(data)
        else:
            self.sink.input_written(len(data))

    def _release_input(self) -> None:
        n, self._unacked = self._unacked, 0
        if n:
            self.sink.input_written(n)

    def eof(self) -> None:
        """SSH EOF (a PTY gets ^D, as a terminal would)."""
        if self._chan is None or self._closed:
            return
        if self.term is not None:
            self.write(b"\x04")
        else:
            with contextlib.suppress(OSError, asyncssh.Error):
                self._chan.write_eof()

    def resize(self, cols: int, rows: int) -> None:
        """SSH window-change request."""
        if self._chan is not None and self.term is not None and not self._closed:
            self._chan.change_terminal_size(cols, rows)

    def signal(self, sig: str) -> None:
        """Control character on a PTY for INT/QUIT/TSTP, else an SSH signal request."""
        if self._chan is None or self._closed:
            return
        name = sig.upper().removeprefix("SIG")
        if self.term is not None and name in _PTY_CHARS:
            self.write(_PTY_CHARS[name])
        else:
            with contextlib.suppress(OSError, asyncssh.Error):
                self._chan.send_signal(name)

    def pause(self, paused: bool) -> None:
        """Follow credit with asyncssh's flow control."""
        if self._chan is None or paused == self._paused or self._closed:
            return
        self._paused = paused
        if paused:
            self._chan.pause_reading()
        else:
            self._chan.resume_reading()

    async def wait_closed(self) -> None:
        """Wait for the SSH connection to close."""
        if self._conn is not None:
            await self._conn.wait_closed()

    def close(self) -> None:
        """Close the SSH channel and connection."""
        if self._closed:
            return
        self._closed = True
        if self._chan is not None:
            self._chan.close()
        if self._conn is not None:
            self._conn.close()
