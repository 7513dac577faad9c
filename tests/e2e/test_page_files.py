"""Issue 19 in Chromium: file transfer on the demo page (demo_site/transfers.mjs).

What a user does, and what they would see or find on the server:

* a 100 MB file chosen with the Upload button lands, byte for byte, in the
  working directory of the shell on screen (the page passes its channel as
  ``ref``); the Download button brings it back (``<a download>`` of an
  object URL), byte for byte;
* Cancel in the transfers panel stops an upload mid-way and leaves nothing on
  the server: no target, no ``.NAME.*.nimbus-part``;
* a path the server refuses shows its reason in plain words in the panel;
* files dropped on the terminal upload the same way;
* against a server that does not transfer files, the controls are not shown.

PTY backend (bash without rc files), file channels on with ``--files-root``
a temporary folder, so nothing outside it is touched.  One page for the
module's transfer tests (the boot is most of a page's cost).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND, ServerThread

pytestmark = pytest.mark.timeout(180)

BIG = 100 * 1000 * 1000
TRANSFER_TIMEOUT_MS = 60_000


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def leftovers(folder: Path, name: str) -> list[str]:
    """The target and any temporary part of an upload of ``name`` in ``folder``."""
    return sorted(
        n
        for n in os.listdir(folder)
        if n == name or (n.startswith(f".{name}.") and n.endswith(".nimbus-part"))
    )


def wait_until(pred: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


class Files:
    """The page's transfer controls, as the user sees and uses them."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.page = demo.page

    def rows(self) -> list[dict[str, Any]]:
        return list(self.demo.js("() => window.nimbusDemo.transfers.list()"))

    def wait_row(
        self, name: str, statuses: tuple[str, ...], timeout: float = TRANSFER_TIMEOUT_MS
    ) -> dict[str, Any]:
        row: dict[str, Any] = self.demo.wait(
            """([name, statuses]) => window.nimbusDemo.transfers.list().reverse()
                .find((r) => r.name === name && statuses.includes(r.status)) ?? false""",
            [name, list(statuses)],
            timeout=timeout,
            what=f"transfer {name} {'/'.join(statuses)}",
        )
        return row

    def row_text(self, name: str) -> str:
        return str(self.page.locator("#transfer-list .xfer", has_text=name).last.inner_text())

    def upload(self, path: Path) -> None:
        with self.page.expect_file_chooser() as chooser:
            self.page.click("#btn-upload")
        chooser.value.set_files(str(path))

    def ask_download(self, path: str) -> None:
        self.page.click("#btn-download")
        try:
            self.page.wait_for_selector("#download-form input[name=path]", state="visible", timeout=15_000)
        except Exception as exc:  # say what the page was doing (seen once, CPU-starved, not reproduced)
            state = self.demo.js(
                """() => ({overlay: document.getElementById('download').hidden,
                    button: document.getElementById('btn-download').hidden,
                    state: window.nimbusDemo.state, phase: window.nimbusDemo.phase,
                    events: window.nimbusDemo.events.slice(-15)})"""
            )
            raise AssertionError(f"the download form did not show: {state}") from exc
        self.page.fill("#download-form input[name=path]", path)
        self.page.click("#download-form button[type=submit]")


@pytest.fixture(scope="module")
def files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files-root")


@pytest.fixture(scope="module")
def files_server(site_dir: Path, files_root: Path) -> Iterator[ServerThread]:
    from nimbus_websocket.node_runtime.server.files import FilePolicy

    st = ServerThread(
        static_dir=str(site_dir), pty_command=PTY_COMMAND, files=FilePolicy(root=str(files_root))
    ).start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def shell_dir(files_root: Path) -> Path:
    """The shell's working directory (inside the file root)."""
    d = files_root / "work dir"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def files_page(browser: Any, files_server: ServerThread, shell_dir: Path) -> Iterator[Files]:
    """One page on the file server, its shell in ``shell_dir``."""
    ctx = browser.new_context(
        viewport={"width": 1000, "height": 620}, device_scale_factor=1, accept_downloads=True
    )
    try:
        demo = Demo(ctx.new_page()).open(files_server.http_url)
        demo.wait_ready()
        demo.set_prompt()
        demo.run(f"cd '{shell_dir}' && echo cd-$((6*7))", r"^cd-42$")
        demo.wait_prompt()
        demo.page.wait_for_selector("#btn-upload", state="visible", timeout=5_000)
        assert demo.page.is_visible("#btn-download")
        yield Files(demo)
    finally:
        with contextlib.suppress(Exception):
            ctx.pages[0].evaluate(
                "() => Promise.race([window.nimbusDemo?.conn?.close(), new Promise((r) => setTimeout(r, 2000))])"
            )
        ctx.close()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files-src") / "big-random.bin"
    with open(path, "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(BIG % (1 << 20)))
    return path


# --------------------------------------------------------------------- tests


def test_upload_and_download_100mb(
    files_page: Files, big_file: Path, shell_dir: Path, shots: Any
) -> None:
    page = files_page.page
    want = sha256_of(big_file)

    t0 = time.monotonic()
    files_page.upload(big_file)
    files_page.wait_row("big-random.bin", ("running", "done", "failed"), timeout=10_000)
    shots(page, "uploading")
    row = files_page.wait_row("big-random.bin", ("done", "failed", "cancelled"))
    up_s = time.monotonic() - t0
    assert row["status"] == "done", row
    arrived = shell_dir / "big-random.bin"
    assert arrived.stat().st_size == BIG
    assert sha256_of(arrived) == want
    assert leftovers(shell_dir, "big-random.bin") == ["big-random.bin"]  # no part file left
    assert "95.4 MiB / 95.4 MiB" in files_page.row_text("big-random.bin")

    t0 = time.monotonic()
    with page.expect_download(timeout=TRANSFER_TIMEOUT_MS) as info:
        files_page.ask_download("big-random.bin")  # relative: the shell's working directory
    dl = info.value
    down_s = time.monotonic() - t0
    assert dl.suggested_filename == "big-random.bin"
    got = Path(dl.path())
    assert got.stat().st_size == BIG
    assert sha256_of(got) == want
    row = files_page.wait_row("big-random.bin", ("done",), timeout=5_000)
    assert row["kind"] == "download" and row["total"] == BIG
    shots(page, "done")
    print(
        f"100 MB in Chromium: upload {up_s:.1f} s ({BIG / up_s / 1e6:.0f} MB/s), download {down_s:.1f} s ({BIG / down_s / 1e6:.0f} MB/s)"
    )
    # The shell is still there and took no input from the transfers.
    files_page.demo.run("echo after-$((40+2))", r"^after-42$")


def test_cancel_upload_leaves_nothing(files_page: Files, big_file: Path, shell_dir: Path) -> None:
    src = big_file.with_name("to-cancel.bin")
    if not src.exists():
        os.link(big_file, src)
    files_page.upload(src)
    files_page.demo.wait(
        """() => window.nimbusDemo.transfers.list().some((r) => r.name === 'to-cancel.bin'
            && r.status === 'running' && r.done >= 4 * 1024 * 1024)""",
        timeout=20_000,
        what="the upload under way",
    )
    # A part file is there while it runs...
    assert any(n.endswith(".nimbus-part") for n in leftovers(shell_dir, "to-cancel.bin"))
    files_page.page.click(
        "#transfer-list .xfer[data-status=running] button[aria-label='Cancel upload of to-cancel.bin']"
    )
    row = files_page.wait_row("to-cancel.bin", ("cancelled", "done", "failed"), timeout=10_000)
    assert row["status"] == "cancelled", row
    # Not `done < BIG`: on a CPU-starved machine the page may have sent every byte before the
    # cancel went out; the upload is still cancelled (not committed) and leaves nothing.
    assert row["done"] <= BIG
    assert "Cancelled" in files_page.row_text("to-cancel.bin")
    # ...and nothing once it was cancelled.
    wait_until(
        lambda: leftovers(shell_dir, "to-cancel.bin") == [],
        "the partial upload removed",
        timeout=10,
    )


def test_refused_paths_show_the_reason(files_page: Files, shell_dir: Path) -> None:
    # Outside the server's file root: refused by its policy.
    files_page.ask_download("/etc/hostname")
    row = files_page.wait_row("hostname", ("failed", "done"), timeout=10_000)
    assert row["status"] == "failed", row
    text = files_page.row_text("hostname")
    assert "Download failed: /etc/hostname: outside the server's file root" in text, text
    assert "outside the server's file root" in files_page.page.inner_text("#st-msg")
    # A file that is not there.
    files_page.ask_download("no-such-file.txt")
    row = files_page.wait_row("no-such-file.txt", ("failed", "done"), timeout=10_000)
    assert row["status"] == "failed", row
    assert "no-such-file.txt: No such file or directory" in files_page.row_text("no-such-file.txt")
    assert not (shell_dir / "no-such-file.txt").exists()


def test_drop_on_terminal_uploads(files_page: Files, shell_dir: Path) -> None:
    body = "dropped on the terminal\n" * 1000
    files_page.demo.js(
        """(body) => {
            const dt = new DataTransfer();
            dt.items.add(new File([body], 'dropped.txt', {type: 'text/plain'}));
            const el = document.getElementById('terminal');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                el.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
            }
        }""",
        body,
    )
    row = files_page.wait_row("dropped.txt", ("done", "failed"), timeout=15_000)
    assert row["status"] == "done", row
    assert (shell_dir / "dropped.txt").read_text() == body
    assert files_page.demo.js("() => document.getElementById('terminal').dataset.drop") is None


def test_no_controls_without_file_channels(context: Any, page_server: Any) -> None:
    # page_server runs a fixed --pty-command: file channels are off by default there.
    demo = Demo(context.new_page()).open(page_server.http_url)
    demo.wait_ready()
    assert demo.js("() => window.nimbusDemo.conn.files") is False
    assert demo.page.is_hidden("#btn-upload") and demo.page.is_hidden("#btn-download")
    assert demo.js("() => window.nimbusDemo.transfers.available") is False


def test_ssh_backend_shares_the_tabs_connection(
    context: Any, site_dir: Path, sshd: Any, tmp_path: Path
) -> None:
    """Over SSH the transfers run SFTP on the tab's own SSH connection: no second login
    (the page keeps no credentials); relative paths are the SSH user's home."""
    from urllib.parse import urlencode

    from nimbus_websocket.node_runtime.server import SshOptions

    st = ServerThread(
        static_dir=str(site_dir),
        backend="ssh",
        ssh=SshOptions(known_hosts=str(sshd.known_hosts_path)),
        allow_targets=(f"{sshd.host}:{sshd.port}",),
    ).start()
    name = f"nimbus-e2e-ssh-{os.getpid()}-{time.monotonic_ns()}.bin"
    src = tmp_path / name
    src.write_bytes(os.urandom(3 * 1000 * 1000 + 7))
    landed = Path.home() / name  # the test sshd logs in as this user
    try:
        q = urlencode({"target": f"{sshd.host}:{sshd.port}", "user": sshd.username})
        demo = Demo(context.new_page()).open(f"{st.http_url}?{q}")
        demo.wait("() => window.nimbusDemo.phase === 'form'", timeout=60_000, what="the login form")
        demo.page.check("input[name=auth][value=key]")
        demo.page.fill("textarea[name=key]", sshd.client_key_text or "")
        demo.page.click("#connect-form button[type=submit]")
        demo.wait_ready()
        demo.page.wait_for_selector("#btn-upload", state="visible", timeout=5_000)
        files = Files(demo)
        files.upload(src)
        row = files.wait_row(name, ("done", "failed"), timeout=20_000)
        assert row["status"] == "done", row
        assert sha256_of(landed) == sha256_of(src)
        with demo.page.expect_download(timeout=20_000) as info:
            files.ask_download(name)
        assert sha256_of(Path(info.value.path())) == sha256_of(src)
    finally:
        landed.unlink(missing_ok=True)
        st.stop()
