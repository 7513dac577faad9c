"""Issue 17 in Chromium: the page through a round-robin balancer resumes after reload on another instance.

Real parts, started here on free loopback ports: Debian's ``redis-server``,
three ``nimbus-ws serve --redis ... --static SITE`` instances (bash on a PTY)
and Debian's nginx balancing them round robin with the recipe of
docs/deploy.md (tests/cluster/cluster_util.py).  Every request of the page --
the HTML, its assets and the WebSocket -- goes through nginx, so a reload's
WebSocket lands on whichever instance is next (one extra request through
the balancer before each reload keeps the round robin from aliasing with the
three requests a reload makes): the page is reloaded (at most six times) until one reload landed on an instance that does not own the
session and was relayed to the owner.  Every reload must resume the same
shell (same ``$$``, a shell variable kept, output in flight exactly once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import sys
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from e2e_server import PTY_COMMAND

_CLUSTER = str(Path(__file__).resolve().parents[1] / "cluster")
if _CLUSTER not in sys.path:
    sys.path.insert(0, _CLUSTER)

from cluster_util import TOKEN, Cluster, Instance, RedisProc, balancer, have_nginx, write_files  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not have_nginx(), reason="nginx is not installed (make setup installs Debian's nginx)"
    ),
]

#: Reloads tried until one lands on another instance (round robin over 3 makes it the next one or two).
MAX_RELOADS = 6


@dataclass
class PageCluster:
    cluster: Cluster

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cluster.nginx.port}/?token={TOKEN}"


@pytest.fixture
def page_cluster(site_dir: Path, tmp_path: Path) -> Iterator[PageCluster]:
    redis = RedisProc()
    try:
        redis.start()
    except (AssertionError, OSError) as exc:
        pytest.skip(f"redis-server did not start: {exc}")
    secret, tokens = write_files(tmp_path / "cfg")
    instances = [
        Instance(
            f"p{n}", redis, secret, tokens, "--static", str(site_dir), "--pty-command", PTY_COMMAND
        )
        for n in range(3)
    ]

    async def start() -> None:
        await asyncio.gather(*(i.started() for i in instances))

    async def stop() -> None:
        await asyncio.gather(*(i.stop() for i in instances), return_exceptions=True)

    try:
        _run(start)
        nginx = balancer(tmp_path / "nginx", [i.port for i in instances])
        try:
            yield PageCluster(Cluster(redis, instances, nginx, tmp_path))
        finally:
            nginx.stop()
    finally:
        _run(stop)
        redis.stop()


def _run(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(fn())`` in a thread of its own (Playwright's sync API holds this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(fn())).result(timeout=120)


TRANSCRIPT_TAP = """
window.__e2eText = '';
const dec = new TextDecoder();
window.__nimbusTap = (b) => { window.__e2eText += dec.decode(b, {stream: true}); };
addEventListener('pagehide', () => {
    sessionStorage.setItem('e2e-before', (sessionStorage.getItem('e2e-before') || '') + window.__e2eText);
});
"""


def _owners(pc: PageCluster) -> dict[str, float]:
    return {i.name: i.metric("nimbus_cluster_sessions_owned") for i in pc.cluster.instances}


def test_reload_through_the_balancer_resumes_on_another_instance(
    context: Any, page_cluster: PageCluster, shots: Any
) -> None:
    context.add_init_script(TRANSCRIPT_TAP)
    demo = Demo(context.new_page()).open(page_cluster.url)
    demo.wait_ready()
    demo.set_prompt()
    pid = demo.shell_pid()
    owner = next(i for i in page_cluster.cluster.instances if pid in _children(i.pid))
    demo.run("NIMBUS_E2E=kept-$((3*4)); echo set-$((2*2))", r"^set-4$")
    demo.wait_prompt()
    relayed_before = page_cluster.cluster.relayed()
    relayed_reloads = 0
    for n in range(MAX_RELOADS):
        # Output produced while the page reloads: numbered lines, exactly once across the reload.
        demo.type(
            f"for i in $(seq 1 60); do echo R{n}L$i; sleep 0.01; done; echo loop{n}-$((9*9))-done"
        )
        demo.page.keyboard.press("Enter")
        demo.wait_screen(rf"^R{n}L3$")
        _nudge(page_cluster)
        demo.page.reload()
        demo.wait_ready()
        assert demo.demo("resumed") is True, (
            f"reload {n} opened a new session: {demo.demo('events')}"
        )
        demo.wait_screen(rf"^loop{n}-81-done$", timeout=20_000)
        demo.wait_prompt()
        before = demo.js("() => sessionStorage.getItem('e2e-before')") or ""
        after = demo.js("() => window.__e2eText")
        numbers = [int(x) for x in re.findall(rf"(?<![$\w])R{n}L(\d+)\r\n", before + after)]
        assert numbers == list(range(1, 61)), f"reload {n}: lost or repeated lines: {numbers}"
        if page_cluster.cluster.relayed() > relayed_before:
            relayed_reloads += 1
            break
    shots(demo.page, "resumed-on-another-instance")
    assert relayed_reloads == 1, (
        f"no reload landed on another instance in {MAX_RELOADS}: {_owners(page_cluster)} {_log(page_cluster)}"
    )
    # The same shell, still on its owner, its state kept.
    assert demo.shell_pid() == pid
    assert pid in _children(owner.pid)
    demo.run("echo var=$NIMBUS_E2E", r"^var=kept-12$")
    owned = _owners(page_cluster)
    assert owned[owner.name] == 1 and sum(owned.values()) == 1, owned


def _log(pc: PageCluster) -> dict[str, list[str]]:
    """Each instance's last connection and relay log lines."""
    words = ("connect", "relay", "resum")
    return {
        i.name: [line for line in i.serve.lines if any(w in line for w in words)][-8:]
        for i in pc.cluster.instances
    }


def _nudge(pc: PageCluster) -> None:
    """One request through the balancer: a reload makes three upstream requests (the
    HTML, page-config.json, the WebSocket), so over three instances its WebSocket would
    land on the same one every time; one more moves the round robin along."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{pc.cluster.nginx.port}/page-config.json", timeout=10
    ) as r:
        r.read()


def _children(pid: int) -> set[int]:
    """The direct children of ``pid`` (the shells a server runs)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}
