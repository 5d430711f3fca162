"""Problem details (RFC 9457) and the project's exceptions.

Handlers raise :class:`Problem`; one middleware turns it (and aiohttp's own
``HTTPException`` such as the router's 404/405) into an
``application/problem+json`` response. Errors are translated once, there.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://streamer.invalid/problems/"


class StreamerError(Exception):
    """Base class of every error this project raises on purpose."""


class SettingsError(StreamerError):
    """A setting is missing or invalid; the message is one line for the user."""


class Problem(StreamerError):
    """An HTTP error with a problem+json body.

    ``kind`` becomes the last part of the ``type`` URI, so clients can tell
    errors apart without parsing ``detail``.
    """

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """Build an ``application/problem+json`` response."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if extra:
        body.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def from_problem(problem: Problem) -> web.Response:
    return problem_response(
        problem.status,
        problem.detail,
        kind=problem.kind,
        headers=problem.headers,
        extra=problem.extra,
    )


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """Turn aiohttp's HTTPException (router 404/405, 413 from client_max_size...)."""
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() in ("allow", "location", "retry-after", "www-authenticate")
    }
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return problem_response(exc.status, detail, headers=headers)
