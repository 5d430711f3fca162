"""The ``on_response_prepare`` hook: what every response gets just before its headers go out
(a request id; problem+json for errors made elsewhere)."""

from __future__ import annotations

import random
import re

from aiohttp import web

from ..errors import as_problem
from .keys import REQUEST_ID

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Request ids need to be unique, not secret: a generator seeded from the system's randomness
# makes one in ~0.3 µs, where secrets.token_hex (a getrandom call each) took ~11% of the
# CPU of a small-file request.
_ids = random.Random()


def new_request_id() -> str:
    """32 random hex digits."""
    return f"{_ids.getrandbits(128):032x}"


def request_id(request: web.Request) -> str:
    """The request's id: the client's ``X-Request-ID`` when sane, else a random one.

    Computed on first use and kept on the request. (A hook rather than a
    middleware: every middleware keeps a frame alive for the whole life of a
    stream, and idle subscribers should cost as little memory as possible.)
    """
    rid = request.get(REQUEST_ID)
    if rid is None:
        given = request.headers.get("X-Request-ID", "")
        rid = given if _SANE_REQUEST_ID.fullmatch(given) else new_request_id()
        request[REQUEST_ID] = rid
    return rid


async def finish_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook, the one place every response passes: each carries the
    request id, and errors not made as problems become problem+json."""
    response.headers["X-Request-ID"] = request_id(request)
    if response.status >= 400:
        as_problem(response)
