"""Terminal options the operator sets for the page, and the ``page-config.json`` carrying them.

``nimbus-ws serve --terminal-option KEY=VALUE`` (repeatable; like ttyd's ``-t``) sets
xterm.js options for every page this server serves: ``fontSize=18``, ``theme=light``,
``theme={"red": "#ff5555"}``...  Keys are an allow-list (:data:`TERMINAL_OPTIONS`), each
with a type and a range, checked before the server starts; the page fetches them from
``GET <base-path>page-config.json`` (no inline script under the CSP).  A user's own
settings (``localStorage``) and URL parameters win over them (docs/page-features.md).

The page (``demo_site/prefs.mjs``) checks the same keys and ranges for URL parameters and
stored settings; ``tests/server/test_terminal_options.py`` holds both to one table.  The
body is a few hundred bytes at most: every value is bounded (:data:`MAX_TEXT`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from websockets.http11 import Response

from .static import response

__all__ = [
    "COLOR_NAMES",
    "PAGE_CONFIG_PATH",
    "TERMINAL_OPTIONS",
    "normalize_option",
    "page_config",
    "page_config_response",
    "parse_terminal_options",
]

log = logging.getLogger("nimbus_websocket.server")

#: Where the page finds its configuration, under the server's base path.
PAGE_CONFIG_PATH = "/page-config.json"
#: Longest text value (a font family list).
MAX_TEXT = 200
#: Colours a theme may set: xterm.js's ``ITheme`` names of the 16 ANSI colours and five more.
COLOR_NAMES = (
    "foreground", "background", "cursor", "cursorAccent", "selectionBackground",
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
    "brightBlack", "brightRed", "brightGreen", "brightYellow",
    "brightBlue", "brightMagenta", "brightCyan", "brightWhite",
)
#: The page's named themes.
THEMES = ("dark", "light")
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

Parser = Callable[[object], object]


def _int(lo: int, hi: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number {lo}..{hi}")
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise ValueError(f"expected a whole number {lo}..{hi}") from None
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"expected a whole number {lo}..{hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Parser:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number {lo:g}..{hi:g}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number {lo:g}..{hi:g}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"expected a number {lo:g}..{hi:g}")
        return int(value) if float(value).is_integer() else float(value)

    return parse


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _choice(*choices: str) -> Parser:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return str(value)

    return parse


#: What a font family list may hold besides letters and digits: xterm.js writes it into
#: CSS, so no ``;``, braces, parentheses, ``\\``, ``<``... (a link must not restyle the page).
_FONT_PUNCT = " ,'\"._-"


def _font(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ValueError(f"expected text of 1..{MAX_TEXT} characters")
    if not all(c.isalnum() or c in _FONT_PUNCT for c in value):
        raise ValueError("only letters, digits, spaces and , ' \" . _ - are allowed")
    return value.strip()


def _colors(value: object) -> dict[str, str]:
    """``{"red": "#ff5555", ...}``: known colour names, ``#rgb``/``#rrggbb`` values."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("expected dark, light or a JSON object of colours") from None
    if not isinstance(value, dict) or not value:
        raise ValueError("expected dark, light or a JSON object of colours")
    out: dict[str, str] = {}
    for name, color in value.items():
        if name not in COLOR_NAMES:
            raise ValueError(f"unknown colour {str(name)[:40]!r} (one of: {', '.join(COLOR_NAMES)})")
        if not isinstance(color, str) or not _HEX.fullmatch(color):
            raise ValueError(f"colour {name} must be #rgb or #rrggbb")
        out[name] = color.lower()
    return out


#: The options a server may set, by xterm.js name, each with its parser (a string from the
#: command line, or a native value from an embedder).  ``theme`` takes a name (``dark``,
#: ``light``) or a JSON object of colours; the page keeps the colours under ``colors``.
TERMINAL_OPTIONS: Mapping[str, Parser] = {
    "fontSize": _int(6, 72),
    "fontFamily": _font,
    "lineHeight": _float(1, 3),
    "letterSpacing": _float(-5, 20),
    "cursorStyle": _choice("block", "underline", "bar"),
    "cursorBlink": _bool,
    "scrollback": _int(0, 50_000),
    "theme": _choice(*THEMES),
    "colors": _colors,
    "drawBoldTextInBrightColors": _bool,
    "minimumContrastRatio": _float(1, 21),
    "macOptionIsMeta": _bool,
    "rightClickSelectsWord": _bool,
}


def normalize_option(key: str, value: object) -> tuple[str, object]:
    """``(key, value)`` checked against :data:`TERMINAL_OPTIONS`; ``theme`` given a JSON
    object becomes ``colors``.  ``ValueError`` (one line) for anything else."""
    if key == "theme" and not (isinstance(value, str) and value.strip() in THEMES):
        try:
            return "colors", _colors(value)
        except ValueError as exc:
            raise ValueError(f"theme: {exc}") from None
    parse = TERMINAL_OPTIONS.get(key)
    if parse is None:
        raise ValueError(f"unknown option {key[:40]!r} (one of: {', '.join(k for k in TERMINAL_OPTIONS if k != 'colors')})")
    if isinstance(value, str) and key != "fontFamily":
        value = value.strip()
    try:
        return key, parse(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def parse_terminal_options(texts: Iterable[str]) -> dict[str, object]:
    """``KEY=VALUE`` texts (``--terminal-option``) -> checked options; later ones win
    (colours merge).  ``ValueError`` naming the bad one."""
    out: dict[str, object] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{text[:60]!r}: expected KEY=VALUE, e.g. fontSize=18")
        name, checked = normalize_option(key, value)
        previous = out.get(name)
        if isinstance(previous, dict) and isinstance(checked, dict):  # colours merge
            checked = {**previous, **checked}
        out[name] = checked
    return out


def page_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of ``page-config.json``: ``{"terminal": {...}}``.  An embedder's
    invalid option is logged and left out (the CLI refuses it before starting)."""
    terminal: dict[str, object] = {}
    for key, value in options.items():
        try:
            name, checked = normalize_option(str(key), value)
        except ValueError as exc:
            log.warning("terminal option ignored: %s", exc, extra={"event": "terminal_option_ignored"})
            continue
        terminal[name] = checked
    return {"terminal": terminal}


def page_config_response(options: Mapping[str, Any]) -> Response:
    """``200 application/json``, never cached (the operator may restart with other options)."""
    body = json.dumps(page_config(options), separators=(",", ":"), sort_keys=True).encode()
    return response(200, body, "application/json", cache="no-store")
