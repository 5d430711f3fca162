"""``GET /events`` (subscribe) and ``POST /events/{topic}`` (publish).

A subscriber registers with the broker before anything is answered, then
gets the preamble and its replay (or a reset) and goes live: see
:mod:`streamer.web.streams` for the stream's life.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import re

from aiohttp import web

from .. import sse
from ..errors import BrokerClosed, BrokerUnavailable, Problem
from .clients import is_loopback
from .formats import json_line
from .keys import BROKER, EVENTS_FANOUT, SETTINGS
from .streams import (
    client_may_leave,
    end_at_shutdown,
    last_event_id,
    start_stream,
    write_opening,
)

TOPIC = re.compile(r"[A-Za-z0-9_.-]{1,64}")
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
RESERVED_EVENTS = frozenset({"reset"})  # sent by the server itself
MAX_TOPICS_PER_STREAM = 64


def parse_topics(request: web.Request) -> frozenset[str] | None:
    topics = request.query.getall("topic", [])
    if not topics:
        return None
    if len(topics) > MAX_TOPICS_PER_STREAM:
        raise Problem(400, "too-many-topics", f"At most {MAX_TOPICS_PER_STREAM} topics per stream.")
    for topic in topics:
        check_topic(topic)
    return frozenset(topics)


def check_topic(topic: str) -> None:
    if not TOPIC.fullmatch(topic):
        raise Problem(
            400,
            "invalid-topic",
            f"Topic {topic[:80]!r} is invalid: use 1 to 64 of A-Z a-z 0-9 _ . -",
        )


async def stream_events(request: web.Request) -> web.StreamResponse:
    """``GET /events``: an SSE stream over the requested topics (all when none)."""
    broker = request.app[BROKER]
    fanout = request.app[EVENTS_FANOUT]
    topics = fanout.shared_topics(parse_topics(request))
    resume_from = last_event_id(request)
    response, stream = start_stream(request, fanout, topics)
    if stream is None:
        return response
    try:
        with client_may_leave(stream.transport):
            resume = await broker.subscribe(stream, resume_from)  # before any answer
            opening = b""
            if resume.reset is not None:
                assert resume_from is not None
                opening = sse.encode_reset(resume.head_id, resume.reset, resume_from)
            await write_opening(request, response, opening, resume.replay)
            del resume  # an idle stream keeps this frame alive: hold nothing big in it
            stream.go_live()
            if await stream.closed == "shutdown":  # inline: a helper coroutine would stay alive
                await end_at_shutdown(request, response)  # for the life of every idle stream
    except BrokerClosed:
        raise broker_unavailable() from None
    except BrokerUnavailable as exc:
        raise broker_unavailable(exc) from None
    finally:
        stream.stop_counting()
        broker.unsubscribe(stream)
    return response


def broker_unavailable(cause: BrokerUnavailable | None = None) -> Problem:
    """503 at once: the broker is shutting down (``cause`` None), or cannot reach its store."""
    if cause is None:
        detail, retry_after = "The event broker is not accepting requests.", 1.0
    else:
        detail, retry_after = f"The event broker cannot use Redis now: {cause}", cause.retry_after
    seconds = str(max(1, math.ceil(retry_after)))
    return Problem(503, "broker-unavailable", detail, headers={"Retry-After": seconds})


# -- publishing ----------------------------------------------------------------


def authorize_publisher(request: web.Request, token: str | None) -> None:
    """Bearer token when one is configured; otherwise loopback clients only."""
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Problem(
                401,
                "unauthorized",
                "Publishing needs 'Authorization: Bearer <token>' with the configured token.",
                headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
            )
        return
    if not is_loopback(request.remote):
        raise Problem(
            403,
            "forbidden",
            "No token is configured, so only clients on this machine may publish.",
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to be over ``limit``."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding != "identity":
        # aiohttp would inflate it on the event loop, unbounded, before any handler ran
        # (four 199 KB gzip bombs held the loop 1.7 s): the server does not inflate
        # request bodies at all (see streamer.server), and says what it takes instead
        raise Problem(
            415,
            "unsupported-encoding",
            "Request bodies are taken as they are: send them without Content-Encoding.",
            headers={"Accept-Encoding": "identity"},
        )
    too_large = Problem(413, "body-too-large", f"The body is over the limit of {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def decode_payload(body: bytes, content_type: str) -> str:
    """JSON bodies are re-serialized compact; anything else must be UTF-8 text.

    Everything that could fail later is checked here, before the broker assigns an id:
    an event that took an id and then failed to encode would leave a hole that a resume
    across it could not tell from a lost event.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "invalid-body", "The body is not valid UTF-8 text.") from None
    if content_type == "application/json" or content_type.endswith("+json"):
        return _compact_json(text)
    return text


def _compact_json(text: str) -> str:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        data.encode("utf-8")  # "\udc80" parses to a lone surrogate, which has no UTF-8
    except RecursionError:
        raise Problem(400, "invalid-json", "The JSON body is nested too deeply.") from None
    except UnicodeEncodeError:
        raise Problem(
            400,
            "invalid-json",
            "The JSON body holds a lone surrogate (an unpaired \\uD800-\\uDFFF).",
        ) from None
    except ValueError as exc:
        raise Problem(400, "invalid-json", f"The body is not valid JSON: {exc}") from None
    return data


def _refuse_constant(name: str) -> object:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259): passed on, subscribers' parsers
    would reject the data."""
    raise ValueError(f"{name} is not a JSON value")


async def publish_event(request: web.Request) -> web.Response:
    """``POST /events/{topic}``: publish the body as one event."""
    settings = request.app[SETTINGS]
    authorize_publisher(request, settings.token)
    topic = request.match_info["topic"]
    check_topic(topic)
    event = request.query.get("event", "message")
    if not EVENT_NAME.fullmatch(event) or event in RESERVED_EVENTS:
        raise Problem(
            400,
            "invalid-event",
            f"Event name {event[:80]!r} is invalid or reserved: use 1 to 64 of "
            "A-Z a-z 0-9 _ . : - (not 'reset').",
        )
    try:
        async with asyncio.timeout(settings.send_timeout):  # nginx's client_body_timeout
            body = await read_body(request, settings.max_body)
    except TimeoutError:
        raise Problem(
            408,
            "body-timeout",
            f"The body did not arrive within {settings.send_timeout:g} s.",
            headers={"Connection": "close"},
        ) from None
    data = decode_payload(body, request.content_type)
    try:
        published = await request.app[BROKER].publish(topic, data, event)
    except BrokerClosed:
        raise broker_unavailable() from None
    except BrokerUnavailable as exc:
        raise broker_unavailable(exc) from None
    return web.json_response({"id": published.id, "topic": topic}, status=201, dumps=json_line)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/events", stream_events, allow_head=False)
    app.router.add_post("/events/{topic}", publish_event)
