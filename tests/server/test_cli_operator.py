"""Issue 14, item 5: ``nimbus-ws`` for operators, run as a subprocess.

* ``--version``; every ``serve`` option has help text showing its default;
  the exit statuses are in ``serve --help``;
* an operator's mistake is one line on stderr and exit status 2, never a
  traceback: port in use, an address not of this machine, ``--static``
  missing or not a directory, a certificate or key that cannot be read or
  used, a missing extra, a bad ``--token-file``;
* options that cannot work as given are warned about at start: ``--backend
  ssh`` without ``--known-hosts``; SSH-only options given to a PTY server.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nimbus_websocket.node_runtime.cli import build_parser
from support.serve_cli import ServeProcess
from support.tls_certs import TlsFiles, make_tls

pytestmark = pytest.mark.timeout(60)

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def cli(*args: str, prefix: list[str] | None = None, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m nimbus_websocket ARGS`` (or ``python -c CODE``), bounded."""
    argv = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "nimbus_websocket", *args]
    return subprocess.run(
        [*(prefix or []), *argv], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def one_line_error(r: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit status 2, stderr exactly ``expected`` (one line), no traceback."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.splitlines() == [expected], r.stderr


# ------------------------------------------------------------ help, version


def test_version() -> None:
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"nimbus-ws {importlib.metadata.version('nimbus-websocket')}"


def _serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["serve"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def test_every_serve_option_has_help_showing_its_default() -> None:
    parser = _serve_parser()
    flags = (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction)
    missing = []
    for action in parser._actions:
        if isinstance(action, flags):
            assert action.help, action.option_strings
            continue
        text = (action.help or "") % {**vars(action), "prog": parser.prog}
        if "default" not in text.lower():
            missing.append(f"{'/'.join(action.option_strings)}: {action.help!r}")
    assert not missing, "serve options without help showing their default:\n" + "\n".join(missing)


def test_serve_help_documents_exit_status_and_defaults() -> None:
    r = cli("serve", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "exit status: 0 stopped by SIGTERM or SIGINT; 2 usage or configuration error" in text
    assert "1 unexpected error" in text
    for shown in ("(default 127.0.0.1", "(default 8765", "(default /ws/ssh)", "(default pty)"):
        assert shown in text, shown


# ----------------------------------------------------------- one line, exit 2


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 another socket is listening on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_port_in_use(busy_port: int) -> None:
    r = cli("serve", "--port", str(busy_port))
    one_line_error(r, f"nimbus-ws serve: port {busy_port} on 127.0.0.1 is in use")


def test_address_not_of_this_machine() -> None:
    r = cli("serve", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never local
    one_line_error(r, "nimbus-ws serve: cannot listen on 192.0.2.1: not an address of this machine")


def test_static_missing_or_not_a_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-site"
    one_line_error(cli("serve", "--static", str(missing)), f"nimbus-ws serve: --static {missing} does not exist")
    afile = tmp_path / "index.html"
    afile.write_text("<!doctype html>")
    one_line_error(cli("serve", "--static", str(afile)), f"nimbus-ws serve: --static {afile} is not a directory")


def test_file_and_recording_options_refuse_bad_values_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    one_line_error(
        cli("serve", "--files-root", str(missing)),
        f"nimbus-ws serve: --files-root {missing} does not exist",
    )
    one_line_error(
        cli("serve", "--max-file-size", "lots"),
        "nimbus-ws serve: --max-file-size: 'lots' is not a size (bytes, or a number with K, M, G or T)",
    )
    one_line_error(
        cli("serve", "--no-files", "--files-root", str(tmp_path)),
        "nimbus-ws serve: --files-root and --max-file-size need file transfer (drop --no-files)",
    )
    one_line_error(
        cli("serve", "--record-input"),
        "nimbus-ws serve: --record-input and --record-max-size need --record DIR",
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = cli("serve", "--record", str(blocker / "rec"))
    assert (
        r.returncode == 2
        and "Traceback" not in r.stderr
        and r.stderr.startswith(f"nimbus-ws serve: --record {blocker}/rec:")
    ), r.stderr
    assert len(r.stderr.splitlines()) == 1
    one_line_error(
        cli("serve", "--record", str(tmp_path / "rec"), "--record-max-size", "1K"),
        "nimbus-ws serve: --record-max-size must be at least 4K",
    )


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


def test_certificate_or_key_missing_or_unusable(tls: TlsFiles, tmp_path: Path) -> None:
    cert, key = str(tls.cert), str(tls.key)
    gone = str(tmp_path / "gone.pem")
    one_line_error(
        cli("serve", "--cert", gone, "--key", key), f"nimbus-ws serve: cannot read --cert {gone}: No such file or directory"
    )
    one_line_error(
        cli("serve", "--cert", cert, "--key", gone), f"nimbus-ws serve: cannot read --key {gone}: No such file or directory"
    )
    one_line_error(
        cli("serve", "--cert", str(tmp_path), "--key", key), f"nimbus-ws serve: cannot read --cert {tmp_path}: Is a directory"
    )
    one_line_error(
        cli("serve", "--cert", cert, "--key", str(tls.other_key)),
        f"nimbus-ws serve: --cert {cert} and --key {tls.other_key}: the private key does not match the certificate",
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    r = cli("serve", "--cert", str(garbage), "--key", key)
    one_line_error(r, r.stderr.strip())
    assert r.stderr.startswith(f"nimbus-ws serve: --cert {garbage} and --key {key}: not a PEM certificate chain"), r.stderr
    r = cli("serve", "--cert", cert, "--key", str(tls.encrypted_key))  # refused, never a passphrase prompt
    one_line_error(r, r.stderr.strip())
    assert "the private key is encrypted" in r.stderr, r.stderr
    one_line_error(cli("serve", "--key", key), "nimbus-ws serve: --key needs --cert")


@pytest.fixture
def private_key_dir(tls: TlsFiles) -> Iterator[tuple[Path, Path]]:
    """The certificate readable by anyone, the key by root only (in a directory others may enter)."""
    d = Path(tempfile.mkdtemp(prefix="nimbus-tls-"))
    try:
        d.chmod(0o711)
        cert, key = d / "server.pem", d / "server.key"
        shutil.copyfile(tls.cert, cert)
        shutil.copyfile(tls.key, key)
        cert.chmod(0o644)
        key.chmod(0o600)
        yield cert, key
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_key_not_readable_by_the_server_user(private_key_dir: tuple[Path, Path]) -> None:
    cert, key = private_key_dir
    r = cli("serve", "--cert", str(cert), "--key", str(key), prefix=NOBODY)  # the server runs as nobody
    one_line_error(r, f"nimbus-ws serve: cannot read --key {key}: Permission denied")


def test_bad_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    gone = tmp_path / "tokens"
    one_line_error(
        cli("serve", "--token-file", str(gone)), f"nimbus-ws serve: cannot read --token-file {gone}: No such file or directory"
    )


BLOCK_WEBSOCKETS = (
    "import sys; sys.modules['websockets'] = None\n"  # as if the extra were not installed
    "from nimbus_websocket.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["serve"], "server"),
        (["serve", "--port", "9", "--help"], "server"),
        (["connect", "ws://127.0.0.1:9/ws/ssh", "-c", "true"], "client"),
    ],
)
def test_missing_extra_is_named(argv: list[str], extra: str) -> None:
    r = cli(code=BLOCK_WEBSOCKETS.replace("sys.argv[1:]", repr(argv)))
    command = argv[0]
    one_line_error(
        r,
        f"nimbus-ws {command}: needs the '{extra}' extra (module websockets is not installed): "
        f"pip install 'nimbus-websocket[{extra}]'",
    )


def test_missing_extra_still_lists_the_command() -> None:
    r = cli(code=BLOCK_WEBSOCKETS.replace("sys.argv[1:]", "['--help']"))
    assert r.returncode == 0, r.stderr
    text = " ".join(re.sub(r"-\n\s*", "-", r.stdout).split())  # argparse may wrap after a hyphen
    assert "serve not installed: pip install 'nimbus-websocket[server]'" in text, r.stdout


# --------------------------------------------------------- warnings at start




async def _start_lines(serve_cli: Callable[..., ServeProcess], *args: str) -> list[str]:
    """stderr up to the start line; the server then stops cleanly (status 0)."""
    sp = serve_cli(*args)
    await sp.started()
    lines = list(sp.lines)
    assert await sp.stop() == 0, sp.lines
    assert not any("Traceback" in line for line in sp.lines), sp.lines
    return lines


async def test_ssh_without_known_hosts_warns(serve_cli: Callable[..., ServeProcess], tmp_path: Path) -> None:
    lines = await _start_lines(serve_cli, "--backend", "ssh")
    assert any("without --known-hosts: every connection will fail its host-key check" in line for line in lines), lines
    known = tmp_path / "known_hosts"
    known.write_text("")
    for args in (["--known-hosts", str(known)], ["--insecure-ignore-host-keys"]):
        lines = await _start_lines(serve_cli, "--backend", "ssh", *args)
        assert not any("--known-hosts" in line and "warn" in line for line in lines), (args, lines)


async def test_pty_server_says_ssh_options_are_ignored(serve_cli: Callable[..., ServeProcess]) -> None:
    lines = await _start_lines(serve_cli, "--allow-target", "db1:22")
    assert any("--allow-target ignored: the PTY backend runs a local shell" in line for line in lines), lines
    lines = await _start_lines(serve_cli)
    assert not any("ignored" in line for line in lines), lines
