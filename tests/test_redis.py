"""Scale-out on a real ``redis-server``: several servers (the "hosts" here run in this
process, on one Redis), resumes across them, resets, Redis restarts and outages, and the
canary that notices a reader that silently stopped receiving.

``--workers`` (several processes on one port) is in ``tests/test_workers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import redis

from streamer.broker.model import Position
from streamer.broker.redis import RedisBroker
from streamer.fanout import Fanout
from streamer.server import running
from streamer.sse import ParsedEvent, encode_reset, parse_stream

from .helpers import (
    RecordingSink,
    assert_problem,
    free_port,
    make_settings,
    publish,
    wait_for,
)
from .proxy import CuttingProxy
from .redis_support import RedisServer
from .sse_client import subscribe


@contextlib.asynccontextmanager
async def servers(
    url: str, prefix: str, count: int = 1, **options: Any
) -> AsyncIterator[list[str]]:
    """``count`` servers on the Redis at ``url``, as on ``count`` hosts."""
    async with contextlib.AsyncExitStack() as stack:
        settings = make_settings(broker=url, redis_prefix=prefix, **options)
        yield [await stack.enter_async_context(running(settings)) for _ in range(count)]


@contextlib.asynccontextmanager
async def started(*brokers: RedisBroker) -> AsyncIterator[None]:
    """Start ``brokers``; close them all on the way out, whatever happened."""
    try:
        for broker in brokers:
            await broker.start()
        yield
    finally:
        for broker in brokers:
            await broker.aclose()


def ids_of(events: list[ParsedEvent], event: str = "message") -> list[str | None]:
    return [e.id for e in events if e.event == event]


def offset(event_id: str) -> int:
    position = Position.parse(event_id)
    assert position is not None
    return position.offset


async def health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def broker_state_is(http: aiohttp.ClientSession, base: str, state: str) -> bool:
    return bool((await health(http, base))["broker"]["state"] == state)


async def published_once_up(http: aiohttp.ClientSession, base: str, topic: str, body: str) -> str:
    """Publish, retrying while the broker answers 503 (Redis coming back)."""
    event_id = ""

    async def accepted() -> bool:
        nonlocal event_id
        async with http.post(f"{base}/events/{topic}", data=body) as response:
            if response.status == 503:
                return False
            assert response.status == 201, await response.text()
            event_id = (await response.json())["id"]
            return True

    await wait_for(accepted, timeout=10, interval=0.05)
    return event_id


# --- several servers on one Redis -----------------------------------------------------------


async def test_published_on_one_server_is_received_on_every_server_in_order_once(
    redis_server: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with (
        servers(redis_server.url, redis_prefix, count=2) as (a, b),
        subscribe(http, a, "t") as on_a,
        subscribe(http, b, "t") as on_b,
    ):
        published = await asyncio.gather(
            *(publish(http, (a, b)[n % 2], "t", f"n{n}") for n in range(60))
        )
        in_order = sorted(published, key=offset)
        for stream in (on_a, on_b):
            events = await stream.wait_events(60)
            assert ids_of(events) == in_order  # every one, once, in the log's order
        datas = {e.id: e.data for e in on_a.events}
        assert sorted(datas.values()) == sorted(f"n{n}" for n in range(60))
        assert on_a.text == on_b.text  # byte for byte the same stream on both


async def test_a_client_resumes_on_the_other_server_mid_stream_with_nothing_lost(
    redis_server: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with servers(redis_server.url, redis_prefix, count=2) as (a, b):
        published: list[str] = []
        halfway = asyncio.Event()

        async def publisher() -> None:
            for n in range(200):
                published.append(await publish(http, a, "t", f"n{n}"))
                if n == 50:
                    halfway.set()

        task = asyncio.create_task(publisher())
        got: list[str | None] = []
        async with subscribe(http, a, "t", last_event_id=f"{await first_id(http, a)}") as s:
            await halfway.wait()
            got += ids_of(await s.wait_events(10))
        async with subscribe(http, b, "t", last_event_id=got[-1]) as stream:  # mid-stream
            await task
            events = await stream.wait_events(len(published) - len(got))
            got += ids_of(events)
        assert got == sorted(published, key=offset)


async def first_id(http: aiohttp.ClientSession, base: str) -> str:
    """An id just before everything published from now on: publish one, resume after it."""
    return await publish(http, base, "other", "start")


async def test_resets_over_http_say_why(
    redis_server: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with servers(redis_server.url, redis_prefix, count=2, history=5) as (a, b):
        ids = [await publish(http, a, "t", str(n)) for n in range(300)]
        head = ids[-1]
        epoch, last = Position.parse(head)  # type: ignore[misc]
        cases = {
            ids[0]: "too-old",  # trimmed from the stream by now (MAXLEN ~ history)
            ids[-7]: "too-old",  # still in Redis, but more than history to replay
            str(Position(epoch + 1, 3)): "epoch",
            str(Position(epoch, last + 1)): "unknown",  # from the future
            "42": "malformed",
        }
        for since, reason in cases.items():
            for base in (a, b):
                async with subscribe(http, base, "t", last_event_id=since) as stream:
                    await stream.wait_events(1)
                    frame = encode_reset(head, reason, since).decode()
                    assert stream.text == f"retry: 2000\n: connected\n\n{frame}", reason
        async with subscribe(http, b, "t", last_event_id=ids[-3]) as stream:  # kept: replayed
            assert ids_of(await stream.wait_events(2)) == ids[-2:]


# --- Redis restarts and outages ---------------------------------------------------------------


async def test_redis_restarted_with_its_aof_keeps_the_ids_and_resumes(
    own_redis: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with servers(own_redis.url, redis_prefix, heartbeat=0.3) as (server,):
        before = [await publish(http, server, "t", f"b{n}") for n in range(5)]
        async with subscribe(http, server, "t", last_event_id=before[1]) as stream:
            await stream.wait_events(3)
            own_redis.stop()
            own_redis.start()
            after = [await published_once_up(http, server, "t", f"a{n}") for n in range(5)]
            events = await stream.wait_events(8)
            assert "event: reset" not in stream.text
            assert ids_of(events) == before[2:] + after
        assert {Position.parse(i).epoch for i in before + after} == {  # type: ignore[union-attr]
            Position.parse(before[0]).epoch  # type: ignore[union-attr]
        }
    async with (
        servers(own_redis.url, redis_prefix) as (fresh,),  # a new server: it reads Redis
        subscribe(http, fresh, "t", last_event_id=before[0]) as stream,
    ):
        assert ids_of(await stream.wait_events(9)) == before[1:] + after


async def test_redis_restarted_empty_resets_clients_to_a_new_epoch(
    own_redis: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with servers(own_redis.url, redis_prefix, heartbeat=0.3) as (server,):
        old = [await publish(http, server, "t", f"o{n}") for n in range(3)]
        async with subscribe(http, server, "t") as stream:
            own_redis.stop()
            own_redis.wipe()
            own_redis.start()
            await stream.wait_text("event: reset\n", timeout=10)
            reset = next(e for e in stream.events if e.event == "reset")
            assert json.loads(reset.data) == {"reason": "epoch", "lastEventId": old[-1]}
            new = await published_once_up(http, server, "t", "new")
            assert ids_of(await stream.wait_events(2)) == [new]
            assert Position.parse(new).epoch != Position.parse(old[0]).epoch  # type: ignore[union-attr]
            assert reset.id is not None
            assert offset(new) == offset(reset.id) + 1
        async with subscribe(http, server, "t", last_event_id=old[1]) as stream:
            await stream.wait_text("event: reset\n")
            assert '"reason":"epoch"' in stream.text


async def test_a_redis_outage_keeps_streams_open_answers_publishes_at_once_and_loses_nothing(
    own_redis: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with (
        servers(own_redis.url, redis_prefix, count=2, heartbeat=0.25, history=5) as (a, b),
        subscribe(http, a, "t") as on_a,
        subscribe(http, b, "t") as on_b,
    ):
        before = [await publish(http, (a, b)[n % 2], "t", f"b{n}") for n in range(10)]
        for stream in (on_a, on_b):
            await stream.wait_events(10)
        own_redis.stop()
        stopped = time.monotonic()
        for base in (a, b):
            await wait_for(lambda: broker_state_is(http, base, "unavailable"))  # noqa: B023
            status = await health(http, base)
            assert status["status"] == "degraded"
            assert status["broker"]["breaker_open"] == 1
        answered = 0
        while time.monotonic() - stopped < 5:  # Redis away for five seconds
            started = time.monotonic()
            async with http.post(f"{a}/events/t", data="lost?") as response:
                took = time.monotonic() - started
                await assert_problem(response, 503, "broker-unavailable")
                assert int(response.headers["Retry-After"]) >= 1
            assert took < 0.1, f"a publish waited {took:.3f} s for Redis"
            answered += 1
            for stream in (on_a, on_b):  # the streams stay open, with their heartbeats
                await stream.wait_new_text(": ping\n\n", timeout=1)
        assert answered >= 10
        # a resume the worker's recent history covers needs no Redis; an older one does
        async with subscribe(http, a, "t", last_event_id=before[-2]) as stream:
            assert ids_of(await stream.wait_events(1)) == before[-1:]
        headers = {"Last-Event-ID": before[0]}
        async with http.get(f"{a}/events", params={"topic": "t"}, headers=headers) as response:
            await assert_problem(response, 503, "broker-unavailable")
            assert int(response.headers["Retry-After"]) >= 1
        own_redis.start()
        after = [await published_once_up(http, (a, b)[n % 2], "t", f"a{n}") for n in range(10)]
        for stream in (on_a, on_b):
            events = await stream.wait_events(20, timeout=10)
            assert ids_of(events) == before + after  # none lost, none twice
            assert not stream.ended
            assert "lost?" not in stream.text
        for base in (a, b):
            await wait_for(lambda: broker_state_is(http, base, "ok"))  # noqa: B023
            counters = (await health(http, base))["broker"]
            assert counters["reconnects"] >= 1
            assert counters["breaker_opened"] >= 1
        async with http.get(f"{a}/metrics") as response:
            text = await response.text()
        assert "\nstreamer_broker_breaker_open 0\n" in text
        assert "\nstreamer_broker_up 1\n" in text


async def test_a_log_that_went_back_behind_what_was_delivered_is_a_new_epoch(
    redis_server: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    """Redis restarted from an append-only file that missed its last second: offsets 4
    and 5 would be handed out again for other events. The next publish notices."""
    async with (
        servers(redis_server.url, redis_prefix) as (server,),
        subscribe(http, server, "t") as stream,
    ):
        old = [await publish(http, server, "t", f"o{n}") for n in range(5)]
        await stream.wait_events(5)
        with redis.Redis(port=redis_server.port) as direct:  # what that restart leaves
            log = f"{redis_prefix}:log"
            kept = direct.xrange(log, count=3)
            direct.delete(log)
            for entry_id, fields in kept:
                direct.xadd(log, fields, id=entry_id)
            direct.set(f"{redis_prefix}:seq", 3)
        new = await publish(http, server, "t", "new")
        events = await stream.wait_events(7)
        assert [e.event for e in events[5:]] == ["reset", "message"]
        assert json.loads(events[5].data) == {"reason": "epoch", "lastEventId": old[-1]}
        assert events[6].id == new
        reset_at = Position.parse(events[5].id or "")
        assert reset_at is not None
        assert Position.parse(new) == Position(reset_at.epoch, 4)
        assert new not in old


async def test_redis_refusing_writes_is_a_503_not_a_500(
    own_redis: RedisServer, redis_prefix: str, http: aiohttp.ClientSession
) -> None:
    async with servers(own_redis.url, redis_prefix) as (server,):
        await publish(http, server, "t", "before")
        with redis.Redis(port=own_redis.port) as direct:
            direct.config_set("maxmemory", 1)  # full: OOM for every write
            try:
                async with http.post(f"{server}/events/t", data="refused") as response:
                    await assert_problem(response, 503, "broker-unavailable")
                    assert "maxmemory" in (await response.json())["detail"]
            finally:
                direct.config_set("maxmemory", 0)
        await published_once_up(http, server, "t", "after")


# --- the canary -----------------------------------------------------------------------------


async def test_a_reader_that_silently_stops_receiving_is_noticed_and_restarted(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with CuttingProxy(f"http://127.0.0.1:{redis_server.port}") as proxy:
        through_proxy = proxy.url.replace("http://", "redis://") + "/0"
        watched = RedisBroker(
            through_proxy, Fanout(), prefix=redis_prefix, canary_every=0.1, canary_deadline=0.5
        )
        other = RedisBroker(redis_server.url, Fanout(), prefix=redis_prefix)
        async with started(watched, other):
            sink = RecordingSink(None)
            await watched.subscribe(sink, None)
            first = await other.publish("t", "before")
            await wait_for(lambda: len(sink.writes) == 1)
            proxy.freeze()  # the reader's connection stays open and says nothing any more
            later = [await other.publish("t", f"later{n}") for n in range(3)]
            everything = b"".join(e.frame.data for e in (first, *later))
            await wait_for(lambda: b"".join(sink.writes) == everything, timeout=8)
            assert watched.canary_failures == 1
            assert watched.health().state == "ok"


async def test_an_idle_worker_notices_a_new_epoch_made_while_its_reader_stayed_connected(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """The keys flushed under a running worker: its reader's connection never broke, and
    it publishes nothing, yet its subscribers are reset and get the new log's events."""
    idle = RedisBroker(redis_server.url, Fanout(), prefix=redis_prefix, canary_every=0.1)
    busy = RedisBroker(redis_server.url, Fanout(), prefix=redis_prefix)
    async with started(idle, busy):
        sink = RecordingSink(None)
        await idle.subscribe(sink, None)
        for n in range(5):
            await busy.publish("t", f"old{n}")
        await wait_for(lambda: idle.head.offset == 5)
        old_head = str(idle.head)
        with redis.Redis(port=redis_server.port) as direct:
            direct.delete(*direct.keys(f"{redis_prefix}:*"))
        new = await busy.publish("t", "new")  # busy makes the new epoch
        assert new.position.epoch != idle.epoch
        await wait_for(lambda: sink.writes and sink.writes[-1].endswith(new.frame.data), 5)
        events = list(parse_stream(b"".join(sink.writes).decode()))
        assert [e.event for e in events[5:]] == ["reset", "message"]
        assert json.loads(events[5].data) == {"reason": "epoch", "lastEventId": old_head}
        assert events[6].id == new.id
        assert idle.epoch == new.position.epoch


# --- startup ----------------------------------------------------------------------------------


async def serve_fails(broker: str) -> tuple[int | None, str]:
    """``streamer serve --broker broker``, which is expected to give up: exit code, stderr."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "streamer", "serve", "--port", "0", "--broker", broker),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, err.decode()


async def test_starting_with_an_unreachable_redis_is_one_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, err = await serve_fails(url)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"streamer: error: cannot reach Redis at {url}: "), lines


async def test_the_error_line_never_shows_the_redis_password() -> None:
    code, err = await serve_fails(f"redis://user:secret@127.0.0.1:{free_port()}/0")
    assert code == 2
    assert "secret" not in err
    assert "cannot reach Redis" in err
