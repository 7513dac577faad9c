"""What the Chromium share tests share: an owner's browser context and the viewers' (test_page_share*.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["owner_and_viewer_contexts"]


@contextlib.contextmanager
def owner_and_viewer_contexts(
    browser: Any, *, clipboard: bool = False
) -> Iterator[tuple[Any, Any]]:
    """The owner's context (1000x620) and the viewers' (760x480: the owner's terminal is letterboxed);
    at the end every page's connection is closed (bounded) before its context."""
    owner = browser.new_context(viewport={"width": 1000, "height": 620}, device_scale_factor=1)
    if clipboard:
        owner.grant_permissions(["clipboard-read", "clipboard-write"])
    viewers = browser.new_context(viewport={"width": 760, "height": 480}, device_scale_factor=1)
    try:
        yield owner, viewers
    finally:
        for ctx in (viewers, owner):
            for page in ctx.pages:
                with contextlib.suppress(Exception):
                    page.evaluate(
                        "() => Promise.race([window.nimbusDemo?.conn?.close(), new Promise((r) => setTimeout(r, 2000))])"
                    )
            ctx.close()
