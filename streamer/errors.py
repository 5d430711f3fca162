"""Problem details (RFC 9457) and the project's exceptions.

Handlers raise :class:`Problem`, which aiohttp sends like any
``HTTPException``. Errors that aiohttp makes itself (the router's 404 and
405, 413 from ``client_max_size``, 500 for a crash) are rewritten to
problem+json by :func:`as_problem` just before their headers go out. There
is deliberately no middleware: a middleware keeps a frame alive for the whole
life of every SSE stream, and costs time on every small request.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://streamer.invalid/problems/"


class StreamerError(Exception):
    """Base class of every error this project raises on purpose."""


class SettingsError(StreamerError):
    """A setting is missing or invalid; the message is one line for the user."""


class StartupError(StreamerError):
    """The server cannot start (port taken, own log not writable...); one line, its cause."""


class BrokerClosed(StreamerError):
    """The broker was closed (the server is shutting down): nothing more is accepted."""


class BrokerUnavailable(StreamerError):
    """The broker cannot reach its store now (Redis is away); try again in ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def problem_body(status: int, detail: str, kind: str | None = None, **extra: Any) -> bytes:
    """The JSON document: ``type`` ends in ``kind`` so clients can branch on it."""
    title = HTTPStatus(status).phrase
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return (json.dumps(document) + "\n").encode()


class Problem(web.HTTPException, StreamerError):
    """An HTTP error answered with a problem+json body. Raise it from a handler."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status_code = status  # read by HTTPException.__init__
        super().__init__(headers=headers)
        self.body = problem_body(status, detail, kind, **extra)
        self.headers[hdrs.CONTENT_TYPE] = PROBLEM_CONTENT_TYPE  # JSON is UTF-8: no charset
        self.kind = kind
        self.detail = detail


def as_problem(response: web.StreamResponse) -> None:
    """Turn an error response made elsewhere (router, aiohttp) into problem+json, in place.

    Called just before the headers go out (``on_response_prepare``).
    """
    if (
        response.status < 400
        or not isinstance(response, web.Response)
        or response.content_type == PROBLEM_CONTENT_TYPE
    ):
        return
    detail = response.reason
    if response.text and not response.text.startswith(str(response.status)):
        detail = response.text.strip()
    body = problem_body(response.status, detail)
    response.body = body
    response.headers[hdrs.CONTENT_TYPE] = PROBLEM_CONTENT_TYPE
    if hdrs.CONTENT_LENGTH in response.headers:  # already computed from the old body
        response.headers[hdrs.CONTENT_LENGTH] = str(len(body))


def not_found() -> Problem:
    """The one 404 for every path that is not served, whatever the reason (the same body
    as the router's own 404, so nothing tells them apart)."""
    return Problem(404, "not-found", "Not Found")
