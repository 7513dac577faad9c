"""Issue 13, item 5, in Chromium: the page works under the server's CSP, and cannot be framed.

* the demo boots (Pyodide, the wheel, xterm.js) and runs a command with the
  reference server's headers, and the browser reports **no** CSP violation
  (``securitypolicyviolation`` events and console messages);
* a page from another origin that frames the terminal gets nothing rendered
  (``frame-ancestors 'none'`` / ``X-Frame-Options: DENY``).
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any

from demo_page import Demo
from e2e_server import ServerThread

LISTEN = """document.addEventListener('securitypolicyviolation', (e) => {
  (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI);
}, true);"""




def test_demo_runs_under_the_csp_without_violations(context: Any, site_server: ServerThread) -> None:
    page = context.new_page()
    page.add_init_script(LISTEN)
    response = page.goto(site_server.http_url)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
    demo = Demo(page)
    demo.wait_ready()
    demo.run("echo csp-$((6*7))", r"^csp-42\s*$")
    violations = page.evaluate("() => window.__csp || []")
    assert violations == [], violations
    assert not [m for m in demo.console if "Content Security Policy" in m or "EvalError" in m], demo.console


def test_terminal_cannot_be_framed_by_another_origin(context: Any, site_server: ServerThread, tmp_path: Path) -> None:
    (tmp_path / "evil.html").write_text(f'<iframe id="f" src="{site_server.http_url}" width=800 height=400></iframe>')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page = context.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text))
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/evil.html")
        page.wait_for_timeout(1500)  # fixed window: the frame's navigation is refused, not slow
        frame = page.frame_locator("#f")
        assert frame.locator("#terminal").count() == 0
        assert any("frame" in m.lower() for m in blocked), blocked
    finally:
        evil.shutdown()
