"""Issue 18 in Chromium: share links on the demo page (demo_site/share.mjs).

What the owner and two viewers do, and what each would see:

* the owner shares the terminal on screen through the Share dialog, once
  read-write (the dialog warns that the viewer can type into the shell) and
  once read-only; each viewer opens its link in a page of its own -- the
  token leaves the address bar at once -- and sees the owner's screen under
  "Watching … — shared by the owner", at the owner's size (letterboxed in a
  smaller window), without tabs, file or share buttons;
* what the read-write viewer types reaches the owner's shell; what the
  read-only one types does not;
* a viewer joining while the owner runs vim sees vim's screen, the same text
  as the owner's terminal; a resize of the owner's window reaches the viewers;
* the owner's status bar counts 2 viewers and lists them (address, mode,
  since); a viewer's reload comes back to the view; Revoke disconnects that
  viewer, whose page says the owner stopped sharing.

PTY backend (bash without rc files), one server for the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo
from share_pages import owner_and_viewer_contexts

pytestmark = pytest.mark.timeout(180)

#: ``t_RV`` empty: vim does not ask the terminal for its version, so it sends no XTGETTCAP
#: queries (``ESC P + q … ESC \\``).  The server's screen model (pyte, share_hub.py) has no
#: DCS parser and would show their payload as text on a late joiner's screen -- a
#: server-side gap this test steps around (reported with issue 18's page work).
VIM = "vim -N -u NONE -i NONE --noplugin -n --cmd 'set t_RV='"


def lines(text: str) -> list[str]:
    out = [line.rstrip() for line in text.split("\n")]
    while out and not out[-1]:
        out.pop()
    return out


def share_link(owner: Demo, mode: str) -> str:
    """Share the owner's terminal through the dialog; the link it shows."""
    page = owner.page
    page.click("#btn-share")
    page.wait_for_selector("#share-form", state="visible")
    assert page.input_value("#share-form select[name=ttl]") == "3600"  # 1 h by default
    assert not page.is_visible("#share-warn")  # read-only is the default
    page.check(f"#share-form input[name=mode][value={mode}]")
    if mode == "write":
        assert "can type into your shell" in page.inner_text("#share-warn")
    else:
        assert not page.is_visible("#share-warn")
    created = owner.demo("share.created")
    page.click("#share-create")
    owner.wait("(n) => window.nimbusDemo.share.created > n", created, what="the share link")
    link = page.input_value("#share-link")
    assert page.is_visible("#share-copy") and "share=" in link and "token=" not in link
    page.click("#share-copy")
    owner.wait("() => window.nimbusDemo.share.copied > 0", what="the link copied")
    page.click("#share-cancel")
    assert not page.is_visible("#share")
    return link


def open_viewer(ctx: Any, link: str, mode: str) -> Demo:
    viewer = Demo(ctx.new_page()).open(link)
    viewer.wait_ready()
    assert "share=" not in viewer.page.url  # the token left the address bar
    words = "read-only" if mode == "read" else "read-write"
    assert viewer.page.inner_text("#view-banner") == f"Watching {words} — shared by the owner"
    assert viewer.demo("view")["mode"] == mode
    for hidden in (
        "#tabbar",
        "#btn-share",
        "#btn-upload",
        "#btn-download",
        "#btn-new",
        "#st-viewers",
    ):
        assert not viewer.page.is_visible(hidden), hidden
    return viewer


def size(demo: Demo) -> list[int]:
    return list(demo.js("() => [window.nimbusDemo.term.cols, window.nimbusDemo.term.rows]"))


def wait_same_screen(viewer: Demo, owner: Demo, what: str, timeout: float = 15.0) -> None:
    """Until the viewer's screen equals the owner's *current* one (the owner's may still change:
    vim clears "-- INSERT --" after Escape), re-read every second, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        want = lines(owner.screen())
        try:
            viewer.wait(
                """(want) => { const got = window.nimbusDemo.screenText().split('\\n').map((l) => l.trimEnd());
                    while (got.length && !got[got.length - 1]) got.pop();
                    return JSON.stringify(got) === JSON.stringify(want); }""",
                want,
                timeout=1000,
                what=what,
            )
            return
        except AssertionError:
            if time.monotonic() > deadline:
                assert lines(viewer.screen()) == lines(owner.screen()), what
                raise


@pytest.fixture
def contexts(browser: Any) -> Iterator[tuple[Any, Any]]:
    """The owner's browser context and the viewers' (a smaller window: the owner's terminal is letterboxed)."""
    with owner_and_viewer_contexts(browser, clipboard=True) as pair:
        yield pair


def test_the_owner_shares_two_viewers_watch_type_reload_and_one_is_revoked(
    page_server: Any, contexts: tuple[Any, Any], shots: Any
) -> None:
    owner_ctx, viewer_ctx = contexts
    owner = Demo(owner_ctx.new_page()).open(page_server.http_url)
    owner.wait_ready()
    owner.set_prompt()
    owner.page.wait_for_selector("#btn-share", state="visible", timeout=5_000)
    assert not owner.page.is_visible("#st-viewers")  # nobody watches yet

    # A read-write viewer: the owner's screen, at the owner's size, and its typing reaches the shell.
    rw = open_viewer(viewer_ctx, share_link(owner, "write"), "write")
    rw.wait_screen(r"^prompt-42$")
    assert rw.demo("view")["size"] == {"cols": size(owner)[0], "rows": size(owner)[1]}
    assert size(rw) == size(owner)
    rw.type("echo rw-$((3*4))")
    rw.page.keyboard.press("Enter")
    owner.wait_screen(r"^rw-12$")
    rw.wait_screen(r"^rw-12$")
    owner.wait_prompt()

    # vim on the owner's terminal; the read-only viewer joins late and sees vim's screen.
    owner.run(VIM, r"^~")
    owner.wait_rx_stable(300)  # vim has drawn its screen and reads keys
    owner.type("ifirst line")
    owner.page.keyboard.press("Enter")
    owner.type("second line")
    owner.page.keyboard.press("Escape")
    owner.wait_screen(r"^second line$")
    ro = open_viewer(viewer_ctx, share_link(owner, "read"), "read")
    wait_same_screen(ro, owner, "the late viewer's screen = the owner's vim screen")
    assert size(ro) == size(owner)
    shots(ro.page, "read-only-viewer")

    # What the read-only viewer types never reaches vim; the read-write viewer's does.
    ro.page.click("#terminal")
    ro.type("ixyz-from-ro")
    ro.page.keyboard.press("Escape")
    rw.page.bring_to_front()
    rw.page.click("#terminal")
    rw.type("Othird line from rw")
    rw.page.keyboard.press("Escape")
    owner.wait_screen(r"^third line from rw$")
    wait_same_screen(ro, owner, "the read-only viewer follows live")
    assert "xyz-from-ro" not in owner.screen()

    # The owner counts two viewers and lists them.
    owner.page.bring_to_front()
    owner.wait("() => document.getElementById('st-viewers').textContent === '👁 2'", what="👁 2")
    owner.page.click("#st-viewers")
    owner.page.wait_for_selector("#viewer-list .viewer", state="visible")
    rows = owner.page.locator("#viewer-list .viewer").all_inner_texts()
    assert len(rows) == 2 and all("127.0.0.1" in r and "since" in r for r in rows), rows
    assert sorted("read-only" in r for r in rows) == [False, True], rows
    shots(owner.page, "owner-viewers")

    # The owner's window shrinks: the viewers' terminals follow its size.
    before = size(owner)
    owner.page.set_viewport_size({"width": 880, "height": 560})
    owner.wait(
        "(c) => window.nimbusDemo.term.cols !== c", before[0], what="the owner's terminal refitted"
    )
    owner.wait_rx_stable(300)
    for v in (ro, rw):
        v.wait(
            "(s) => window.nimbusDemo.term.cols === s[0] && window.nimbusDemo.term.rows === s[1]",
            size(owner),
            what="the viewer at the owner's new size",
        )

    # A viewer's reload comes back to the view.
    ro.page.reload()
    ro.wait_ready()
    assert ro.page.inner_text("#view-banner") == "Watching read-only — shared by the owner"
    assert ro.demo("resumed") is True
    assert size(ro) == size(owner)
    wait_same_screen(ro, owner, "the reloaded viewer's screen")

    # Revoke the read-only link: that viewer is disconnected and says why; the other stays.
    ro_grant = ro_link_grant(owner)
    owner.page.click(f"#viewer-list .grant[data-grant='{ro_grant}'] .grant-revoke")
    ro.wait("() => window.nimbusDemo.view.ended !== null", what="the revoked viewer's message")
    assert ro.demo("view")["ended"] == "The owner stopped sharing"
    assert "The owner stopped sharing" in ro.page.inner_text("#view-banner")
    assert ro.page.is_visible("#notice") and "The owner stopped sharing" in ro.page.inner_text(
        "#notice"
    )
    assert ro.demo("error")["code"] == 4016
    owner.wait("() => document.getElementById('st-viewers').textContent === '👁 1'", what="👁 1")
    shots(ro.page, "revoked")
    # The dead link, opened again: refused at connect (4003), and the page says the link is not valid.
    ro.page.reload()
    ro.wait("() => window.nimbusDemo.view?.ended != null", what="the dead link's message")
    assert ro.demo("view")["ended"].startswith("This share link is not valid")
    assert "Share link not valid" in ro.page.inner_text("#notice")
    owner.page.click("#terminal")
    owner.type("Olast line")
    owner.page.keyboard.press("Escape")
    rw.wait_screen(r"^last line$")  # the read-write viewer still watches
    owner.type(":q!")
    owner.page.keyboard.press("Enter")
    owner.wait_prompt()


def ro_link_grant(owner: Demo) -> str:
    """The grant of the owner's read-only link (share.mjs's list)."""
    groups = owner.demo("share.list()")
    grants = [g["grant"] for g in groups if g["mode"] == "read"]
    assert len(grants) == 1, groups
    return str(grants[0])


def test_a_reload_lists_the_links_made_before_it_and_revoke_still_works(
    page_server: Any, contexts: tuple[Any, Any]
) -> None:
    """A link nobody opened yet is still listed after the owner's reload (sessionStorage,
    share.mjs): Revoke there works -- the link is refused afterwards -- and the list
    stays empty after another reload."""
    owner_ctx, viewer_ctx = contexts
    owner = Demo(owner_ctx.new_page()).open(page_server.http_url)
    owner.wait_ready()
    link = share_link(owner, "read")
    grant = owner.demo("share.lastLink")["grant"]
    owner.page.reload()
    owner.wait_ready()
    assert owner.demo("resumed") is True
    owner.wait(
        "(g) => window.nimbusDemo.share.list().some((l) => l.grant === g && l.link)",
        grant,
        what="the link listed after the reload",
    )
    owner.page.wait_for_selector("#st-viewers", state="visible")
    owner.page.click("#st-viewers")
    owner.page.click(f"#viewer-list .grant[data-grant='{grant}'] .grant-revoke")
    owner.wait("() => window.nimbusDemo.share.list().length === 0", what="the link revoked")
    viewer = Demo(viewer_ctx.new_page()).open(link)
    viewer.wait("() => window.nimbusDemo.view?.ended != null", what="the revoked link's message")
    assert viewer.demo("view")["ended"].startswith("This share link is not valid")
    owner.page.reload()
    owner.wait_ready()
    assert owner.demo("share.list()") == []


def test_share_endings_are_told_in_plain_words() -> None:
    """messages.mjs: each reason the server closes a viewer with (4016), and the 4003 of a dead link."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node missing")
    messages = Path(__file__).resolve().parents[2] / "demo_site" / "messages.mjs"
    cases = [
        ["SHARE_REVOKED", "share link revoked by its owner"],
        ["SHARE_REVOKED", "share link expired"],
        ["SHARE_REVOKED", "the shared terminal ended"],
        ["SHARE_REVOKED", "something new"],
        ["AUTH_FAILED", "share link not valid (revoked, expired or unknown)"],
        ["CONNECT_FAILED", "share link not valid (revoked, expired or unknown)"],
        ["AUTH_FAILED", "token required"],
    ]
    script = (
        "import(process.argv[1]).then((m) => process.stdout.write(JSON.stringify("
        "JSON.parse(process.argv[2]).map(([n, r]) => [m.userMessage(n, r), m.shareEnded(n, r)]))))"
    )
    r = subprocess.run(
        [node, "-e", script, messages.as_uri(), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(r.stdout) == [
        ["The owner stopped sharing", True],
        ["The share link expired", True],
        ["The shared terminal ended", True],
        ["The share link no longer works (revoked, expired, or its terminal ended)", True],
        ["This share link is not valid (it was revoked, it expired, or it is unknown)", True],
        ["This share link is not valid (it was revoked, it expired, or it is unknown)", True],
        ["The server needs a token", False],
    ]
