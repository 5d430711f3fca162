"""Pure Server-Sent Events encoding and parsing.

Everything here is a function from values to ``bytes`` (or back), with no I/O,
so the exact bytes on the wire can be tested directly. The framing follows the
WHATWG HTML "server-sent events" section:

* a field line is ``name: value\\n``; a line starting with ``:`` is a comment;
* an event ends with a blank line;
* CR, LF and CRLF all end a line, so a payload line break of any kind must be
  split into several ``data:`` lines (the client joins them with ``\\n``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

# CRLF first so it counts as one break, not two.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Split ``text`` the way an SSE client would: on CRLF, lone CR and lone LF."""
    return _LINE_BREAK.split(text)


def encode_event(event_id: str | None, event: str, data: str) -> bytes:
    """Encode one event: ``id:``, ``event:`` and one ``data:`` line per payload line.

    An empty payload still gets one empty ``data:`` line, so the browser
    dispatches the event (it drops events whose data buffer stays empty).
    Without an id (``None``) the client keeps the last id it had.
    """
    parts = [f"id: {event_id}\nevent: {event}\n" if event_id is not None else f"event: {event}\n"]
    parts.extend(f"data: {line}\n" for line in split_lines(data))
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str) -> bytes:
    """Encode a comment line block (ignored by clients, keeps proxies and NATs awake)."""
    return "".join(f": {line}\n" for line in split_lines(text)).encode() + b"\n"


def encode_preamble(retry_ms: int) -> bytes:
    """What every stream starts with: the reconnect delay and a ``connected`` comment."""
    return f"retry: {retry_ms}\n: connected\n\n".encode()


PING = encode_comment("ping")
MAX_ECHOED_ID = 200  # characters of the client's Last-Event-ID repeated in a reset


def encode_reset(head_id: str, reason: str, last_event_id: str) -> bytes:
    """The ``reset`` event: resuming from ``last_event_id`` is not possible, for ``reason``.

    Its id is ``head_id`` (the live point), so a client that reconnects after
    it resumes from there. Every stream (events, logs) sends this one shape:
    ``{"reason":...,"lastEventId":...}``, compact, the id cut at 200 characters.
    """
    data = json.dumps(
        {"reason": reason, "lastEventId": last_event_id[:MAX_ECHOED_ID]},
        separators=(",", ":"),  # ASCII-only: a lone surrogate from a query cannot break it
    )
    return encode_event(head_id, "reset", data)


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """One dispatched event as an EventSource would see it."""

    id: str | None
    event: str
    data: str


def parse_stream(text: str) -> Iterator[ParsedEvent]:
    """Parse SSE text into events with the browser's rules (used by tests and benchmarks).

    Comments and ``retry:`` lines are skipped; an event whose data buffer is
    empty is not dispatched, exactly as in EventSource. A trailing event
    without its blank line is incomplete and not yielded.
    """
    event_id: str | None = None
    event = ""
    data: list[str] = []
    has_data = False
    lines = split_lines(text)
    # The last element is whatever followed the final line break: incomplete.
    for line in lines[:-1]:
        if line == "":
            if has_data:
                yield ParsedEvent(event_id, event or "message", "\n".join(data))
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
            has_data = True
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            event_id = value
