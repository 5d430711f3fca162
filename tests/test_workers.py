"""``streamer serve --workers N`` on a real ``redis-server``: N processes on one port that
deliver every event to every subscriber once, resume on any worker, publish each media
change once (with the election surviving its leader), restart a worker that dies and stop
together on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.broker.model import Position

from .helpers import CliServer, cli_server, free_port, publish, wait_for
from .redis_support import RedisServer
from .sse_client import EventStream, subscribe


@contextlib.contextmanager
def workers(redis: RedisServer, prefix: str, *args: str, count: int = 2) -> Iterator[CliServer]:
    with cli_server(
        *("--workers", str(count), "--broker", redis.url, "--redis-prefix", prefix, *args)
    ) as server:
        assert f"({count} workers," in server.lines[0]
        try:
            yield server
        except BaseException:
            print("".join(server.lines))  # the supervisor's and workers' log, for the report
            raise


@contextlib.asynccontextmanager
async def fresh_connections() -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose every request is a new connection: the kernel picks its worker."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        yield session


async def worker_health(base: str, count: int = 2) -> dict[int, dict[str, Any]]:
    """``/healthz`` of each of ``count`` workers, by worker number (asked until all answer)."""
    seen: dict[int, dict[str, Any]] = {}
    async with fresh_connections() as http:

        async def all_seen() -> bool:
            async with http.get(f"{base}/healthz") as response:
                body = await response.json()
            seen[body["worker"]] = body
            return len(seen) == count

        await wait_for(all_seen, timeout=10)
    return seen


def offset(event_id: str | None) -> int:
    position = Position.parse(event_id or "")
    assert position is not None
    return position.offset


async def test_twenty_subscribers_over_two_workers_each_get_every_event_once(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with workers(redis_server, redis_prefix) as server:
        async with contextlib.AsyncExitStack() as stack:
            sessions = [await stack.enter_async_context(fresh_connections()) for _ in range(20)]
            streams = [
                await stack.enter_async_context(subscribe(http, server.url, "t"))
                for http in sessions
            ]
            health = await worker_health(server.url)
            counts = [body["subscribers"] for body in health.values()]
            assert sum(counts) == 20
            assert min(counts) > 0, counts  # both workers serve some of them
            published = await asyncio.gather(
                *(publish(sessions[n % 20], server.url, "t", f"n{n}") for n in range(40))
            )
            expected = sorted(published, key=offset)
            for stream in streams:
                events = await stream.wait_events(40)
                assert [e.id for e in events] == expected


async def test_a_client_reconnecting_lands_on_either_worker_and_misses_nothing(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with workers(redis_server, redis_prefix) as server:
        async with fresh_connections() as http:
            published: list[str] = []

            async def publisher() -> None:
                for n in range(300):
                    published.append(await publish(http, server.url, "t", f"n{n}"))

            start = await publish(http, server.url, "other", "start")
            task = asyncio.create_task(publisher())
            got: list[str] = []
            last = start
            for _ in range(10):  # on a new connection each: the kernel picks the worker
                async with subscribe(http, server.url, "t", last_event_id=last) as stream:
                    events = await stream.wait_events(1, timeout=10)
                    got += [e.id for e in events if e.id]
                    last = got[-1]
            await task
            async with subscribe(http, server.url, "t", last_event_id=last) as stream:
                missing = len(published) - len(got)
                got += [e.id for e in await stream.wait_events(missing, timeout=10) if e.id]
            assert got == sorted(published, key=offset)


async def test_a_media_change_is_one_event_and_leadership_survives_the_leaders_death(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with workers(redis_server, redis_prefix, "--media", str(media)) as server:
        async with fresh_connections() as http, on_a_follower(http, server.url) as stream:
            health = await worker_health(server.url)
            (leader,) = [body["pid"] for body in health.values() if body["broker"]["leader"]]
            (media / "one.txt").write_text("one")
            await stream.wait_text('"path":"one.txt"')
            os.kill(leader, signal.SIGKILL)  # the leader dies; its lease runs out

            async def someone_else_leads() -> bool:
                now = await worker_health(server.url)
                return any(b["broker"]["leader"] and b["pid"] != leader for b in now.values())

            await wait_for(someone_else_leads, timeout=15, interval=0.2)
            (media / "two.txt").write_text("two")
            await stream.wait_text('"path":"two.txt"', timeout=10)
            marker = await publish(http, server.url, "files", "marker")
            await stream.wait_text(marker)  # anything sent twice would be here by now
            created = [e.data for e in stream.events if e.event == "created"]
            assert len(created) == 2
            assert '"path":"one.txt"' in created[0]
            assert '"path":"two.txt"' in created[1]


@contextlib.asynccontextmanager
async def on_a_follower(http: aiohttp.ClientSession, base: str) -> AsyncIterator[EventStream]:
    """A ``files`` stream served by a worker that is not the leader."""
    for _ in range(30):
        async with subscribe(http, base, "files") as stream:
            health = await worker_health(base)
            if any(b["subscribers"] and not b["broker"]["leader"] for b in health.values()):
                yield stream
                return
    pytest.fail("every stream landed on the leader")


async def test_a_worker_that_dies_is_started_again(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with workers(redis_server, redis_prefix) as server:
        before = await worker_health(server.url)
        os.kill(before[1]["pid"], signal.SIGKILL)

        async def replaced() -> bool:
            now = await worker_health(server.url)
            return bool(now[1]["pid"] != before[1]["pid"])

        await wait_for(replaced, timeout=15, interval=0.2)
        assert (await worker_health(server.url))[2]["pid"] == before[2]["pid"]
        await wait_for(lambda: any("restarting in" in line for line in server.lines))


async def test_sigterm_stops_every_worker_within_the_shutdown_timeout(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    with workers(redis_server, redis_prefix, "--shutdown-timeout", "1") as server:
        pids = [body["pid"] for body in (await worker_health(server.url)).values()]
        async with fresh_connections() as http, subscribe(http, server.url, "t") as stream:
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            await stream.wait_end(timeout=3)  # the stream was ended, not cut
            assert "event: shutdown" in stream.text or stream.ended
        await asyncio.to_thread(server.process.wait, 5)
        assert server.process.returncode == 0
        assert time.monotonic() - started < 2.5
        for pid in pids:
            assert _gone(pid)


def _gone(pid: int) -> bool:
    """No such process any more (or a zombie that only waits for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("case", ["unreachable-redis", "port-taken"])
def test_workers_that_cannot_start_exit_2_with_one_line(
    case: str, redis_server: RedisServer
) -> None:
    with contextlib.ExitStack() as stack:
        port = free_port()
        broker = f"redis://127.0.0.1:{free_port()}/0"
        if case == "port-taken":
            broker = redis_server.url
            taken = stack.enter_context(socket.socket())
            taken.bind(("127.0.0.1", port))
            taken.listen()
        command = ["streamer", "serve", "--workers", "2", "--port", str(port)]
        result = subprocess.run(
            [sys.executable, "-m", *command, "--broker", broker],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = "cannot reach Redis at" if case == "unreachable-redis" else "cannot listen on"
    assert lines[0].startswith(f"streamer: error: {expected}"), lines
