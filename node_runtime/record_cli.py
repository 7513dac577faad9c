"""``nimbus-ws record``: recordings made by ``nimbus-ws serve --record DIR`` (asciicast v2).

    nimbus-ws record play FILE [--speed X] [--idle-limit S]   # replay in this terminal
    nimbus-ws record check FILE                               # validate against asciicast v2

``play`` writes the output events with their timing (``--speed 2`` twice as
fast, ``--idle-limit 2`` caps every pause at 2 s; ``--speed 0`` writes
everything at once). A resize is shown as a note on stderr (a terminal
cannot be resized from here). ``check`` exits 0 for a valid file and 1 with
the first problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["CastError", "add_parser", "read_cast"]


class CastError(ValueError):
    """The file is not valid asciicast v2; the message names the line."""


def read_cast(lines: Iterator[str]) -> tuple[dict[str, Any], Iterator[tuple[float, str, str]]]:
    """``(header, events)`` of an asciicast v2 stream; raises :class:`CastError` for what breaks the format."""
    try:
        first = next(lines)
    except StopIteration:
        raise CastError("line 1: empty file") from None
    try:
        header = json.loads(first)
    except ValueError as exc:
        raise CastError(f"line 1: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise CastError("line 1: header must be an object with version 2")
    for key in ("width", "height"):
        if not isinstance(header.get(key), int) or header[key] <= 0:
            raise CastError(f"line 1: header.{key} must be a positive integer")

    def events() -> Iterator[tuple[float, str, str]]:
        last = 0.0
        for n, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as exc:
                raise CastError(f"line {n}: not JSON ({exc})") from None
            if not (
                isinstance(ev, list)
                and len(ev) == 3
                and isinstance(ev[0], (int, float))
                and isinstance(ev[1], str)
                and isinstance(ev[2], str)
            ):
                raise CastError(f"line {n}: an event is [time, code, data]")
            if ev[0] < last:
                raise CastError(f"line {n}: time goes backwards ({ev[0]} < {last})")
            if ev[1] not in ("o", "i", "r", "m"):
                raise CastError(f"line {n}: unknown event code {ev[1]!r}")
            if ev[1] == "r":
                cols, _, rows = ev[2].partition("x")
                if not (cols.isdigit() and rows.isdigit()):
                    raise CastError(f"line {n}: a resize is COLSxROWS, got {ev[2]!r}")
            last = float(ev[0])
            yield float(ev[0]), ev[1], ev[2]

    return header, events()


def add_parser(sub: Any) -> None:
    """Register ``record`` on the ``nimbus-ws`` subcommand parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "record",
        allow_abbrev=False,
        help="replay or check asciicast recordings (serve --record DIR)",
    )
    rsub = p.add_subparsers(dest="record_command", required=True)
    play = rsub.add_parser("play", allow_abbrev=False, help="replay a recording in this terminal")
    play.add_argument("file", help="an asciicast v2 file")
    play.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="playback speed factor (default %(default)s; 0: no waiting)",
    )
    play.add_argument(
        "--idle-limit",
        type=float,
        default=None,
        help="cap every pause at this many seconds (default: none)",
    )
    play.set_defaults(func=_play)
    check = rsub.add_parser(
        "check", allow_abbrev=False, help="validate a file against asciicast v2"
    )
    check.add_argument("file", help="an asciicast v2 file")
    check.set_defaults(func=_check)


def _open(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from f


def _refused(command: str, path: str, exc: OSError | CastError) -> int:
    """One line on stderr for an unreadable or invalid file; exit status 1."""
    why = exc.strerror or exc if isinstance(exc, OSError) else exc
    sys.stderr.write(f"nimbus-ws record {command}: {path}: {why}\n")
    return 1


def _play(args: argparse.Namespace) -> int:
    if args.speed < 0:
        sys.stderr.write("nimbus-ws record play: --speed must be 0 or more\n")
        return 2
    try:
        header, events = read_cast(_open(args.file))
        out = sys.stdout
        start = time.monotonic()
        virtual = 0.0  # playback clock: event time with the idle limit applied
        prev = 0.0
        for t, code, data in events:
            gap = t - prev
            prev = t
            if args.idle_limit is not None:
                gap = min(gap, args.idle_limit)
            virtual += gap
            if args.speed > 0:
                wait = virtual / args.speed - (time.monotonic() - start)
                if wait > 0:
                    out.flush()
                    time.sleep(wait)
            if code == "o":
                out.write(data)
            elif code == "r":
                sys.stderr.write(f"\r\n[nimbus-ws: the terminal was resized to {data}]\r\n")
        out.flush()
    except (OSError, CastError) as exc:
        return _refused("play", args.file, exc)
    del header
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        header, events = read_cast(_open(args.file))
        n = sum(1 for _ in events)
    except (OSError, CastError) as exc:
        return _refused("check", args.file, exc)
    sys.stdout.write(
        f"{args.file}: asciicast v2, {header['width']}x{header['height']}, {n} events\n"
    )
    return 0
