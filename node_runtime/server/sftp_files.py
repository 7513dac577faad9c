"""File channels on the SSH backend: SFTP (asyncssh's client) to ``open.target``.

With ``open.file.ref`` naming a terminal channel of the same session, SFTP
runs on that channel's SSH connection (no second login); otherwise the
transfer connects and authenticates itself exactly as a terminal channel
would (:meth:`~.ssh_backend.SshBackend.connect`: the client's own
credentials, known_hosts).  Paths are the remote user's: relative ones start
in the SFTP server's working directory (the user's home); ``--files-root``
applies to the resolved remote path.  A ``put`` writes a temporary
``.NAME.RANDOM.nimbus-part`` (created exclusively, mode 0600) and renames it
into place (``posix-rename@openssh.com``) once every byte is written; a
failure or a cancel removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets

import asyncssh

from ...core.errors import BackendError
from ...core.messages import FileSpec
from .backend import BackendSink
from .files import _PART, FileBackendBase, FilePolicy, _inside
from .ssh_backend import SshBackend

__all__ = ["SftpFileBackend"]

#: Bytes per SFTP request and requests at once (asyncssh splits a big read or write into
#: parallel requests).
_BLOCK = 64 * 1024
_REQUESTS = 16
#: Bytes a ``get`` reads at a time: 16 requests of ``_BLOCK`` in flight, and one such read
#: is kept ahead while the last goes out, so a ``get`` holds at most 2 MiB (a round trip to
#: sshd per 64 KiB was what limited downloads).
_GET_CHUNK = _BLOCK * _REQUESTS


async def _read(f: asyncssh.SFTPClientFile, n: int, off: int) -> bytes:
    data = await f.read(n, off)
    assert isinstance(data, bytes)
    return data


class SftpFileBackend(FileBackendBase):
    """One file over SFTP; ``shared`` is the referenced channel's backend, if any."""

    def __init__(
        self,
        sink: BackendSink,
        spec: FileSpec,
        policy: FilePolicy,
        ssh: SshBackend,
        shared: SshBackend | None = None,
    ) -> None:
        super().__init__(sink, spec, policy, ssh.user.username)
        self._ssh = ssh
        self._shared = shared
        self._own: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._file: asyncssh.SFTPClientFile | None = None
        self._part: str | None = None

    async def start(self) -> None:
        """Connect (or share), start SFTP and open the file; ``BackendError`` on refusal."""
        conn = self._shared.connection if self._shared is not None else None
        if conn is None:
            conn = self._own = await self._ssh.connect()
        try:
            self._sftp = await conn.start_sftp_client()
            self.path = await self._resolve(self._sftp)
            if self.spec.op == "get":
                attrs = await self._sftp.stat(self.path)
                if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                    raise BackendError("FILE_FAILED", f"{self.spec.path}: not a regular file")
                self._check_size(attrs.size or 0)
                self.file_size = attrs.size or 0
                self._file = await self._sftp.open(
                    self.path, "rb", block_size=_BLOCK, max_requests=_REQUESTS, encoding=None
                )
            else:
                self._check_size(self.spec.size or 0)
                parent, name = posixpath.split(self.path)
                part = posixpath.join(parent, f".{name[:200]}.{secrets.token_hex(4)}{_PART}")
                flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
                self._file = await self._sftp.open(
                    part,
                    flags,
                    asyncssh.SFTPAttrs(permissions=0o600),
                    block_size=_BLOCK,
                    max_requests=_REQUESTS,
                    encoding=None,
                )
                self._part = part
        except asyncssh.SFTPError as exc:
            await self._cleanup(False)
            raise BackendError(
                "FILE_FAILED", f"{self.spec.path}: {exc.reason or 'refused'}"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            await self._cleanup(False)
            raise BackendError("BACKEND_FAILED", f"SFTP refused: {exc}") from None
        except BackendError:
            await self._cleanup(False)
            raise
        self._log("file_start")
        self._run(self._transfer())

    async def _resolve(self, sftp: asyncssh.SFTPClient) -> str:
        path = self.spec.path
        if self.spec.op == "put":  # the file need not exist: resolve its directory
            parent, name = posixpath.split(path)
            full = posixpath.join(await sftp.realpath(parent or "."), name)
        else:
            full = await sftp.realpath(path)
        if self.policy.root is not None:
            root = await sftp.realpath(self.policy.root)
            if not _inside(full, root):
                raise BackendError("POLICY_DENIED", f"{path}: outside the server's file root")
        return full

    async def _transfer(self) -> None:
        try:
            await (self._get() if self.spec.op == "get" else self._put())
        except asyncssh.SFTPError as exc:
            self._fail(str(exc.reason or "SFTP error"))

    async def _get(self) -> None:
        f = self._file
        assert f is not None
        loop = asyncio.get_running_loop()
        await self._send_file(lambda off, n: loop.create_task(_read(f, n, off)), _GET_CHUNK)  # round trips overlap

    async def _put(self) -> None:
        size = self.spec.size or 0
        assert self._file is not None and self._sftp is not None and self._part is not None
        while (data := await self._next_input()) is not None:
            if self.done + len(data) > size:
                self._fail(f"more than the announced {size} bytes arrived")
                return
            await self._file.write(data, self.done)
            self.done += len(data)
            self.sink.input_written(len(data))
        if self.done != size:
            self._fail(f"the upload ended after {self.done} of {size} bytes")
            return
        await self._file.close()
        self._file = None
        mode = self.spec.mode
        if mode is None:
            try:
                mode = (await self._sftp.stat(self.path)).permissions
            except asyncssh.SFTPNoSuchFile:
                mode = 0o644
        await self._sftp.chmod(self._part, (mode or 0o644) & 0o7777)
        await self._sftp.posix_rename(self._part, self.path)
        self._part = None
        self._succeed()

    async def _cleanup(self, finished: bool) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._file.close(), 5)
            self._file = None
        if self._part is not None and self._sftp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sftp.remove(self._part), 5)
            self._part = None
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._own is not None:
            self._own.close()
            self._own = None
