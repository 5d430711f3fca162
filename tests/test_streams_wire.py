"""Streams at the socket level: exact chunk framing, slow consumers, curl."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from .conftest import StartServer
from .helpers import (
    host_port,
    metric,
    publish,
    read_until,
    require_tool,
    subscriber_count,
    wait_for,
)
from .sse_client import subscribe


async def test_http11_stream_is_chunked_exactly(server: str, http: aiohttp.ClientSession) -> None:
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"GET /events?topic=w HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await read_until(reader, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head
    preamble = b"retry: 2000\n: connected\n\n"
    assert await read_until(reader, b"\n\n\r\n") == b"%x\r\n%s\r\n" % (len(preamble), preamble)
    event_id = await publish(http, server, "w", "hi")
    frame = f"id: {event_id}\nevent: message\ndata: hi\n\n".encode()
    assert await read_until(reader, b"\n\n\r\n") == b"%x\r\n%s\r\n" % (len(frame), frame)
    writer.close()


async def test_http10_stream_is_unframed(server: str, http: aiohttp.ClientSession) -> None:
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"GET /events?topic=w HTTP/1.0\r\n\r\n")
    head = await read_until(reader, b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert await read_until(reader, b"\n\n") == b"retry: 2000\n: connected\n\n"
    event_id = await publish(http, server, "w", "a\nb")
    expected = f"id: {event_id}\nevent: message\ndata: a\ndata: b\n\n".encode()
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
    writer.close()


async def test_slow_consumer_is_cut_while_fast_one_gets_everything(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_buffer=64 * 1024)
    # A subscriber that never reads, with a tiny receive window.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(host_port(server))
    slow.sendall(b"GET /events?topic=s HTTP/1.1\r\nHost: t\r\n\r\n")

    await wait_for(lambda: _count_is(http, server, 1))
    payload = "p" * 60_000
    async with subscribe(http, server, "s") as fast:
        await wait_for(lambda: _count_is(http, server, 2))
        ids = []
        # The kernel buffers several MB on loopback before the server's own buffer grows.
        for _ in range(400):
            ids.append(await publish(http, server, "s", payload))
            if await metric(http, server, "streamer_subscribers_dropped_total") == 1:
                break
        else:
            raise AssertionError("slow subscriber was never dropped")
        ids.append(await publish(http, server, "s", "after the drop"))
        events = await fast.wait_events(len(ids), timeout=20)
        assert [e.id for e in events] == ids
        assert await subscriber_count(http, server) == 1
    # The slow socket was closed by the server: draining it ends in EOF or a reset.
    slow.settimeout(5)
    try:
        while slow.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    slow.close()


async def _count_is(http: aiohttp.ClientSession, server: str, count: int) -> bool:
    return await subscriber_count(http, server) == count


async def test_curl_subscriber_receives_event_from_curl_publisher(server: str) -> None:
    curl = require_tool("curl")
    subscriber = await asyncio.create_subprocess_exec(
        curl, "-sN", f"{server}/events?topic=c", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert subscriber.stdout is not None
        assert await read_until(subscriber.stdout, b": connected\n\n") == (
            b"retry: 2000\n: connected\n\n"
        )
        publisher = await asyncio.create_subprocess_exec(
            curl, "-s", "-d", "from curl", f"{server}/events/c", stdout=asyncio.subprocess.PIPE
        )
        reply, _ = await asyncio.wait_for(publisher.communicate(), 10)
        assert publisher.returncode == 0
        assert b'"topic": "c"' in reply
        event = await read_until(subscriber.stdout, b"\n\n")
        assert event.endswith(b"event: message\ndata: from curl\n\n")
    finally:
        subscriber.kill()
        await subscriber.wait()
