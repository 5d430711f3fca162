"""Streams against clients that do not read: every byte they cost has a bound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator

import aiohttp

from streamer.app import create_app
from streamer.server import running
from streamer.web.keys import FANOUTS
from streamer.web.streams import HOLD_ABOVE, SseStream

from .conftest import StartServer
from .helpers import (
    host_port,
    make_settings,
    metric,
    publish,
    subscriber_count,
    subscribers_are,
    wait_for,
)
from .sse_client import subscribe


@contextlib.contextmanager
def stalled_subscriber(
    server: str, query: str, *headers: str, version: str = "1.1"
) -> Iterator[socket.socket]:
    """A subscriber that sends its request and reads nothing (tiny receive window) until
    the test does; in HTTP/1.0 the body comes unframed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(host_port(server))
    head = "".join(f"{h}\r\n" for h in headers)
    sock.sendall(f"GET /events?{query} HTTP/{version}\r\nHost: t\r\n{head}\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


async def test_budget_cuts_the_largest_laggard_first(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    # Each stream alone stays under --max-buffer; together they pass --max-unsent.
    server = await start_server(max_buffer=4 << 20, max_unsent=1 << 20, max_body=200_000)
    with (
        stalled_subscriber(server, "topic=s&topic=t") as _big,
        stalled_subscriber(server, "topic=s") as _small,
    ):
        await wait_for(lambda: subscribers_are(http, server, 2))
        async with subscribe(http, server, "s") as reader:
            await wait_for(lambda: subscribers_are(http, server, 3))
            await publish(http, server, "t", "t" * 150_000)  # only the big laggard gets it
            ids = []
            for _ in range(40):
                ids.append(await publish(http, server, "s", "s" * 60_000))
                if await metric(http, server, "streamer_unsent_cuts_total"):
                    break
            else:
                raise AssertionError("the budget never cut anyone")
            await wait_for(lambda: subscribers_are(http, server, 2))
            # the one cut was the largest: the other laggard is still subscribed
            assert await metric(http, server, "streamer_unsent_cuts_total") == 1
            assert await metric(http, server, "streamer_subscribers_dropped_total") == 1
            assert await metric(http, server, "streamer_unsent_bytes") <= 1 << 20
            # and the client that reads lost nothing
            events = await reader.wait_events(len(ids), timeout=20)
            assert [e.id for e in events] == ids


async def test_replay_to_a_reader_that_stalls_is_cut_after_send_timeout(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(send_timeout=0.5, max_body=200_000)
    first = await publish(http, server, "r", "first")
    ids = [await publish(http, server, "r", "x" * 100_000) for _ in range(40)]  # 4 MB to replay
    with stalled_subscriber(server, "topic=r", f"Last-Event-ID: {first}"):
        await wait_for(lambda: subscribers_are(http, server, 1))
        await wait_for(lambda: subscribers_are(http, server, 0), timeout=5)
    # a client that reads gets the whole replay, then live events
    async with subscribe(http, server, "r", last_event_id=first) as reader:
        ids.append(await publish(http, server, "r", "live"))
        events = await reader.wait_events(len(ids), timeout=20)
        assert [e.id for e in events] == ids


async def test_stream_sockets_have_a_small_kernel_send_buffer(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """Left to autotuning, a stalled stream's kernel buffer grows to megabytes outside the
    budget: the server asks for 64 KiB (Linux reports double). Seen from outside: a
    stalled reader takes at most that much more than its --max-buffer before it is cut."""
    server = await start_server(max_buffer=64 * 1024, max_body=200_000)
    with stalled_subscriber(server, "topic=k") as sock:
        await wait_for(lambda: subscribers_are(http, server, 1))
        sent = 0
        while await subscriber_count(http, server) == 1:
            await publish(http, server, "k", json.dumps("k" * 20_000))
            sent += 20_000
            assert sent < 2 << 20, "the stream was never cut"
        del sock
    # 64 KiB transport buffer + 128 KiB kernel send buffer + 4 KiB receive window, and
    # one event in flight: autotuning alone would have let several MB through
    assert sent <= 64 * 1024 + 128 * 1024 + 4096 + 2 * 20_000 + 64 * 1024


async def test_shutdown_ends_in_time_with_full_buffers_and_many_topics(
    http: aiohttp.ClientSession,
) -> None:
    """Within --shutdown-timeout (+0.2 s) with 200 streams whose buffers are full and
    1,000 idle ones on distinct topics: before, full buffers held it 2.3 s (timeout 1 s)."""
    settings = make_settings(shutdown_timeout=1.0, max_body=200_000, max_buffer=8 << 20)
    stack = contextlib.ExitStack()
    async with contextlib.AsyncExitStack() as server_stack:
        server = await server_stack.enter_async_context(running(settings))
        stalled = [stack.enter_context(stalled_subscriber(server, "topic=f")) for _ in range(200)]
        idle = [stack.enter_context(stalled_subscriber(server, f"topic=i{n}")) for n in range(1000)]
        await wait_for(lambda: subscribers_are(http, server, len(stalled) + len(idle)), 20)
        for _ in range(3):  # 300 KB each: past the kernel buffers, into the server's own
            await publish(http, server, "f", "f" * 100_000)
        started = time.monotonic()
    took = time.monotonic() - started
    stack.close()
    assert took < settings.shutdown_timeout + 0.2, took


def read_through(sock: socket.socket, last_id: str) -> bytes:
    """Read until the event with ``last_id`` has arrived whole (blocking, 20 s at most)."""
    sock.settimeout(20)
    data = b""
    marker = f"\nid: {last_id}\n".encode()
    while marker not in b"\n" + data or not data.endswith(b"\n\n"):
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the stream"
        data += chunk
    return data


async def test_a_stream_that_falls_behind_is_held_then_gets_everything_in_order(
    http: aiohttp.ClientSession,
) -> None:
    """Past HOLD_ABOVE in its transport, what a lagging stream is sent waits as the
    fan-out's own bytes (shared by its group, not copied into one growing bytearray per
    stream); once the client reads, it gets every event, in order, and the stream writes
    directly again."""
    settings = make_settings(max_buffer=16 << 20, max_body=200_000)
    app = create_app(settings)
    async with running(settings, app) as server:
        with contextlib.ExitStack() as stack:
            socks = [
                stack.enter_context(stalled_subscriber(server, "topic=h", version="1.0"))
                for _ in range(2)
            ]
            await wait_for(lambda: subscribers_are(http, server, 2))
            ids = [
                await publish(http, server, "h", json.dumps(f"{n:03d}" + "h" * 50_000))
                for n in range(40)
            ]
            streams = [s for f in app[FANOUTS] for s in f.sinks() if isinstance(s, SseStream)]
            assert len(streams) == 2
            for stream in streams:  # the transport holds at most one event past the mark
                assert stream.transport.get_write_buffer_size() <= HOLD_ABOVE + 51_000
                assert stream.unsent() > 1_500_000  # the rest is held
            first, second = (list(s._held or ()) for s in streams)
            assert first
            assert all(a is b for a, b in zip(first, second, strict=True))
            for sock in socks:
                data = await asyncio.to_thread(read_through, sock, ids[-1])
                assert re.findall(rb"^id: (\S+)$", data, re.MULTILINE) == [i.encode() for i in ids]
            await wait_for(lambda: all(s._held is None for s in streams))
            more = await publish(http, server, "h", json.dumps("after"))
            for sock in socks:
                assert b'data: "after"' in await asyncio.to_thread(read_through, sock, more)
