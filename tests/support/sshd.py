"""A private, throw-away OpenSSH ``sshd`` for integration tests.

See ``/work/shared/design/test-sshd.md``.  ``TestSshd`` starts
``/usr/sbin/sshd -D`` as a child process on ``127.0.0.1`` and a free
unprivileged port, with its own host key, user key, ``authorized_keys`` and
``known_hosts`` in a temporary directory, and stops it again.

    with TestSshd() as sshd:
        conn = await asyncssh.connect(**sshd.connect_kwargs())

Key-based login is for the current user (``root`` here).  When running as
root and ``useradd``/``chpasswd`` exist, a local user ``nimbustest`` with a
random password is created once (idempotently, shared by concurrent test
runs through a lock file) and ``PasswordAuthentication yes`` is enabled;
``password_user``/``password`` are ``None`` otherwise.

This module deliberately does not import pytest: ``start()`` raises
``SshdUnavailable`` (the conftest fixture turns that into a skip).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SSHD_PATH = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"
PASSWORD_USER = "nimbustest"
# Where the shared test user's password lives, so that several test processes
# running at the same time agree on it (each chpasswd would otherwise
# invalidate the password another process is using).
PASSWORD_STATE_DIR = Path("/run/nimbus-websocket-test")


class SshdUnavailable(RuntimeError):
    """sshd (or ssh-keygen) cannot be run here; tests should skip."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, timeout=30, **kw)  # type: ignore[call-overload, no-any-return]


def _descendants(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (Linux /proc; [] elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the ")" that closes the command name.
        try:
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _ensure_password_user() -> tuple[str, str] | None:
    """Create ``nimbustest`` once and return (user, password), or None."""
    if os.geteuid() != 0:
        return None
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    chpasswd = shutil.which("chpasswd") or "/usr/sbin/chpasswd"
    if not (os.access(useradd, os.X_OK) and os.access(chpasswd, os.X_OK)):
        return None
    try:
        PASSWORD_STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        pw_file = PASSWORD_STATE_DIR / f"{PASSWORD_USER}.password"
        with open(PASSWORD_STATE_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _user_exists(PASSWORD_USER):
                proc = subprocess.run(
                    [useradd, "-m", "-s", "/bin/bash", PASSWORD_USER],
                    capture_output=True,
                    timeout=30,
                )
                # 9 = "username already in use" (created by someone else).
                if proc.returncode not in (0, 9) or not _user_exists(PASSWORD_USER):
                    return None
                pw_file.unlink(missing_ok=True)
            if pw_file.exists():
                password = pw_file.read_text().strip()
            else:
                password = secrets.token_urlsafe(18)
                _run([chpasswd], input=f"{PASSWORD_USER}:{password}\n".encode())
                fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(password + "\n")
            return PASSWORD_USER, password
    except (OSError, subprocess.SubprocessError):
        return None


class TestSshd:
    """A private sshd on 127.0.0.1.  Context manager; or ``start()``/``stop()``.

    Attributes (valid after ``start()``): ``host``, ``port``, ``username``,
    ``client_key_path``, ``client_key_text``, ``client_public_key_text``,
    ``known_hosts_path``, ``log_path``, ``config_path``, ``workdir``,
    ``password_user``/``password`` (None when unavailable), ``pid``.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        enable_password_user: bool = True,
        log_level: str = "DEBUG1",
        extra_config: str = "",
        start_timeout: float = 15.0,
    ) -> None:
        self.enable_password_user = enable_password_user
        self.log_level = log_level
        self.extra_config = extra_config
        self.start_timeout = start_timeout

        self.host = "127.0.0.1"
        self.port = 0
        self.username = getpass.getuser()
        self.password_user: str | None = None
        self.password: str | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- paths -----------------------------------------------------------------
    def _p(self, name: str) -> Path:
        assert self.workdir is not None, "TestSshd not started"
        return self.workdir / name

    @property
    def client_key_path(self) -> Path:
        return self._p("client_ed25519")

    @property
    def client_key_text(self) -> str:
        return self.client_key_path.read_text()

    @property
    def client_public_key_text(self) -> str:
        return self._p("client_ed25519.pub").read_text().strip()

    @property
    def host_key_path(self) -> Path:
        return self._p("host_ed25519")

    @property
    def known_hosts_path(self) -> Path:
        return self._p("known_hosts")

    @property
    def log_path(self) -> Path:
        return self._p("sshd.log")

    @property
    def config_path(self) -> Path:
        return self._p("sshd_config")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connect_kwargs(self, **overrides: object) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` (key login as ``username``)."""
        kw: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "known_hosts": str(self.known_hosts_path),
            "client_keys": [str(self.client_key_path)],
            "agent_path": None,  # never pick up a developer's agent
            "config": None,  # nor their ~/.ssh/config
            "password": None,
        }
        kw.update(overrides)
        return kw

    # -- availability ------------------------------------------------------------
    @staticmethod
    def unavailable_reason() -> str | None:
        if not os.access(SSHD_PATH, os.X_OK):
            return f"{SSHD_PATH} not found (apt-get install openssh-server)"
        if shutil.which("ssh-keygen") is None:
            return "ssh-keygen not found"
        return None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> TestSshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TestSshd:
        if self._proc is not None:
            return self
        reason = self.unavailable_reason()
        if reason:
            raise SshdUnavailable(reason)
        try:
            self._prepare()
            # Picking a free port and binding it later is racy; retry a few times.
            last_error: Exception | None = None
            for _ in range(5):
                try:
                    self._launch()
                    return self
                except _PortInUse as e:
                    last_error = e
            raise RuntimeError(f"could not start sshd: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="nimbus-sshd-")
        self.workdir = Path(self._tmp.name).resolve()
        os.chmod(self.workdir, 0o700)
        for key in (self.host_key_path, self.client_key_path):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
        self._p("authorized_keys").write_text(self.client_public_key_text + "\n")
        os.chmod(self._p("authorized_keys"), 0o600)
        if self.enable_password_user:
            creds = _ensure_password_user()
            if creds is not None:
                self.password_user, self.password = creds

    def _write_config(self) -> None:
        password_auth = "yes" if self.password_user else "no"
        # Root's .bashrc on this machine runs `pyenv init`, whose rehash waits up to
        # PYENV_REHASH_TIMEOUT (60 s) for a lock file that a shell killed mid-rehash
        # leaves behind: every later login shell would stall for a minute, a flake that
        # has nothing to do with the code under test.  Bound that wait to 1 s (SetEnv
        # keeps the login itself exactly what sshd does).
        config = f"""\
SetEnv PYENV_REHASH_TIMEOUT=1
Port {self.port}
ListenAddress {self.host}
AddressFamily inet
HostKey {self.host_key_path}
PidFile {self._p("sshd.pid")}
AuthorizedKeysFile {self._p("authorized_keys")}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication {password_auth}
PermitEmptyPasswords no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
PermitTTY yes
AcceptEnv LANG LC_*
X11Forwarding no
AllowTcpForwarding yes
MaxStartups 100
MaxSessions 64
MaxAuthTries 6
LoginGraceTime 30
LogLevel {self.log_level}
Subsystem sftp internal-sftp
{self.extra_config}
"""
        self.config_path.write_text(config)

    def _launch(self) -> None:
        self.port = _free_port()
        self._write_config()
        self.known_hosts_path.write_text(
            f"[{self.host}]:{self.port} {self._p('host_ed25519.pub').read_text().strip()}\n"
        )
        # Syntax check first: gives a readable error instead of a dead child.
        check = subprocess.run(
            [SSHD_PATH, "-t", "-f", str(self.config_path)], capture_output=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t failed: {check.stderr.decode(errors='replace')}")
        self.log_path.write_bytes(b"")
        self._proc = subprocess.Popen(
            [SSHD_PATH, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl-C must not hit sshd directly
        )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        """Poll until the port accepts and sends an SSH banner; no fixed sleeps."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.log_text()
                if "Address already in use" in log:
                    raise _PortInUse(log)
                raise RuntimeError(f"sshd exited with {self._proc.returncode}; log:\n{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    s.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                    banner = b""
                    while b"\n" not in banner:
                        chunk = s.recv(256)
                        if not chunk:
                            break
                        banner += chunk
                    if banner.startswith(b"SSH-2.0-"):
                        # Be polite so sshd logs a clean disconnect.
                        with contextlib.suppress(OSError):
                            s.sendall(b"SSH-2.0-nimbus-readiness-probe\r\n")
                        return
                    last = RuntimeError(f"unexpected banner {banner!r}")
            except OSError as e:
                last = e
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        raise RuntimeError(
            f"sshd did not become ready within {self.start_timeout}s ({last}); log:\n"
            + self.log_text()
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # Per-connection sshd children call setsid(), so they are neither in our
        # process group nor killed when the listener exits: collect them first.
        stragglers = _descendants(proc.pid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = []
            for pid in stragglers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                    alive.append(pid)
            if not alive:
                break
            deadline = time.monotonic() + 2
            while alive and time.monotonic() < deadline:
                alive = [p for p in alive if _pid_alive(p)]
                if alive:
                    time.sleep(0.02)
            stragglers = alive

    def stop(self) -> None:
        self._terminate()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None
        self.workdir = None


class _PortInUse(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists" for kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True
