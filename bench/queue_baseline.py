"""Baseline for the fan-out benchmark: the common aiohttp SSE pattern.

One ``asyncio.Queue`` and one handler coroutine per subscriber; publishing
encodes the event once and puts it into every subscriber's queue, and each
handler awaits its queue and writes with ``StreamResponse.write``. Same HTTP
surface as streamer for what the benchmark uses (``GET /events?topic=``,
``POST /events/{topic}``, ``GET /healthz``), so one load client drives both.

    python bench/queue_baseline.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

QUEUE_SIZE = 10_000  # events; a subscriber whose queue is full is dropped
SUBSCRIBERS = web.AppKey("subscribers", dict)
STATE = web.AppKey("state", dict)


async def events(request: web.Request) -> web.StreamResponse:
    topics = set(request.query.getall("topic", []))
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n: connected\n\n")
    request.app[SUBSCRIBERS][queue] = topics
    try:
        while True:
            await response.write(await queue.get())
    finally:
        request.app[SUBSCRIBERS].pop(queue, None)


async def publish(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    data = (await request.read()).decode()
    state = request.app[STATE]
    state["seq"] += 1
    event_id = f"{state['epoch']}-{state['seq']}"
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    frame = f"id: {event_id}\nevent: message\n{lines}\n".encode()
    subscribers = request.app[SUBSCRIBERS]
    for queue, topics in list(subscribers.items()):
        if topics and topic not in topics:
            continue
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            subscribers.pop(queue, None)
    return web.json_response({"id": event_id, "topic": topic}, status=201)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "subscribers": len(request.app[SUBSCRIBERS])})


def create_app() -> web.Application:
    app = web.Application()
    app[SUBSCRIBERS] = {}
    app[STATE] = {"epoch": time.time_ns() // 1_000_000, "seq": 0}
    app.router.add_get("/events", events)
    app.router.add_post("/events/{topic}", publish)
    app.router.add_get("/healthz", healthz)
    return app


async def main(port: int) -> None:
    runner = web.AppRunner(create_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
