"""Request ids and problem+json errors for every response."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import Problem, from_http_exception, from_problem, problem_response
from .keys import REQUEST_ID

log = logging.getLogger("streamer.web")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_for(request: web.Request) -> str:
    """The client's ``X-Request-ID`` when it is sane, a fresh random one otherwise."""
    given = request.headers.get("X-Request-ID", "")
    return given if _SANE_REQUEST_ID.fullmatch(given) else secrets.token_hex(16)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request_id_for(request)
    return await handler(request)


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: every response, streamed or not, carries the id."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = request_id_for(request)
    response.headers["X-Request-ID"] = rid


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate every error into ``application/problem+json``, once, here."""
    try:
        return await handler(request)
    except Problem as problem:
        return from_problem(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(500, "The server failed to handle this request.")
