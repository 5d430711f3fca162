"""Baseline SSE hub for the fan-out benchmark: the common aiohttp queue-per-subscriber pattern.

What it is: the way most aiohttp SSE servers are written, done properly. Each
subscriber gets one ``asyncio.Queue(maxsize)`` and its handler coroutine loops
``data = await queue.get(); await response.write(data)``. Publishing encodes
the event once and ``put_nowait``s the same bytes into every matching queue; a
subscriber whose queue is full is dropped (its connection is closed and
counted in ``/healthz``). Same HTTP surface as streamer for what the benchmark
uses, so one load client (bench/sse_load.py) drives both:

* ``GET /events?topic=bench``: ``text/event-stream`` (chunked), starting with
  ``retry: 2000\\n: connected\\n\\n``; events are ``id: <epoch>-<seq>``,
  ``event: message`` and one ``data:`` line per payload line;
* ``POST /events/{topic}``: the body becomes one event, 201 ``{"id", "topic"}``;
* ``GET /healthz``: ``{"status", "subscribers", "dropped"}``.

Runs like streamer does: default asyncio loop, ``handler_cancellation=True``,
listen backlog 4096, aiohttp's access log at INFO.

    python bench/baseline_queue.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}
PREAMBLE = b"retry: 2000\n: connected\n\n"


@dataclass(slots=True)
class Subscriber:
    queue: asyncio.Queue[bytes]
    topics: frozenset[str]  # empty: every topic
    transport: asyncio.BaseTransport | None


@dataclass(slots=True)
class Hub:
    queue_size: int
    epoch: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    seq: int = 0
    dropped: int = 0
    subscribers: dict[asyncio.Queue[bytes], Subscriber] = field(default_factory=dict)


HUB = web.AppKey("hub", Hub)


def encode_event(event_id: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {event_id}\nevent: message\n{lines}\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    topics = frozenset(request.query.getall("topic", []))
    queue: asyncio.Queue[bytes] = asyncio.Queue(hub.queue_size)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    # Registered before ": connected" goes out: a client that has seen it gets every later event.
    hub.subscribers[queue] = Subscriber(queue, topics, request.transport)
    try:
        await response.write(PREAMBLE)
        while True:
            data = await queue.get()
            await response.write(data)
    except ConnectionResetError:
        pass  # the client went away between two writes
    finally:
        hub.subscribers.pop(queue, None)
    return response


async def publish(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    topic = request.match_info["topic"]
    data = (await request.read()).decode()
    hub.seq += 1
    event_id = f"{hub.epoch}-{hub.seq}"
    frame = encode_event(event_id, data)
    for queue, subscriber in list(hub.subscribers.items()):
        if subscriber.topics and topic not in subscriber.topics:
            continue
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            # Too slow: cut it. Closing the transport cancels its handler
            # (handler_cancellation), which unregisters it.
            hub.subscribers.pop(queue, None)
            hub.dropped += 1
            if subscriber.transport is not None:
                subscriber.transport.close()
    return web.json_response({"id": event_id, "topic": topic}, status=201)


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {"status": "ok", "subscribers": len(hub.subscribers), "dropped": hub.dropped}
    )


def create_app(queue_size: int) -> web.Application:
    app = web.Application()
    app[HUB] = Hub(queue_size)
    app.router.add_get("/events", events)
    app.router.add_post("/events/{topic}", publish)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, queue_size: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(queue_size), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        real_host, real_port = runner.addresses[0][:2]
        print(f"baseline listening on http://{real_host}:{real_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--queue-size",
        type=int,
        default=8192,
        help="events queued per subscriber before it is dropped (8192 x ~130 B is about "
        "streamer's default 1 MiB max-buffer)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args.host, args.port, args.queue_size))


if __name__ == "__main__":
    main()
