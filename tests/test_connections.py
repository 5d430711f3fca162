"""What a connection may cost before it sends a request: head and idle timeouts, the
connection cap, the open-file limit, and requests the HTTP parser refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time

import aiohttp
import pytest

from streamer.server import raise_fd_limit
from streamer.web.connections import connection_cap

from .conftest import StartServer
from .helpers import host_port, raw_request, split_response

# The soonest a 0.5 s timeout may be seen to close: uvloop's timers count whole
# milliseconds, and the client's clock may start a little after the server's.
SOONEST = 0.45


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent until it closed the connection (fails after ``timeout``)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_head_that_trickles_in_is_cut_after_header_timeout(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(header_timeout=0.5, idle_timeout=30)
    reader, writer = await asyncio.open_connection(*host_port(server))
    started = time.monotonic()

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        while True:  # a byte every 100 ms: each is progress, none completes the head
            await asyncio.sleep(0.1)
            writer.write(b"X")

    trickling = asyncio.create_task(trickle())
    try:
        # meanwhile, others are answered at once
        async with http.get(server + "/healthz") as response:
            assert response.status == 200
        assert await closed_by_server(reader, timeout=5) == b""
        assert SOONEST <= time.monotonic() - started < 2.5
    finally:
        trickling.cancel()
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed_after_idle_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(header_timeout=30, idle_timeout=0.5)
    started = time.monotonic()  # before the server's clock starts, at its accept
    reader, writer = await asyncio.open_connection(*host_port(server))
    try:
        assert await closed_by_server(reader, timeout=5) == b""
        assert SOONEST <= time.monotonic() - started < 2.5
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(
    start_server: StartServer,
) -> None:
    server = await start_server(header_timeout=30, idle_timeout=0.5)
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    started = time.monotonic()  # after the server's clock started, as it sent that answer
    try:
        assert await closed_by_server(reader, timeout=5) == b""
        assert SOONEST <= time.monotonic() - started < 2.5
    finally:
        writer.close()


async def test_a_stream_outlives_both_timeouts(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """The timeouts are about requests not yet made: an open stream is not idle."""
    server = await start_server(header_timeout=0.3, idle_timeout=0.3)
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"GET /events?topic=o HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b": connected\n\n"), 5)
    await asyncio.sleep(1.0)  # three times each timeout, on purpose: nothing may happen
    async with http.post(server + "/events/o", data="still here") as response:
        assert response.status == 201
    assert b"data: still here\n" in await asyncio.wait_for(reader.readuntil(b"here\n"), 5)
    writer.close()


async def test_at_the_connection_cap_the_longest_idle_makes_room(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=3)
    first = await asyncio.open_connection(*host_port(server))
    others = [await asyncio.open_connection(*host_port(server)) for _ in range(2)]
    # a fourth connection: the first (idle longest) is closed, the new one is served
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    answer = await raw_request(server, request)
    assert split_response(answer)[0] == "HTTP/1.1 200 OK"
    assert await closed_by_server(first[0], timeout=5) == b""
    for _, writer in [first, *others]:
        writer.close()


async def test_at_the_cap_with_no_idle_connection_a_new_one_gets_503(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=2)
    streams = []
    for _ in range(2):  # two open streams: busy, never made to leave
        reader, writer = await asyncio.open_connection(*host_port(server))
        writer.write(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b": connected\n\n"), 5)
        streams.append((reader, writer))
    answer = await raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = split_response(answer)
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["Retry-After"] == "1"
    assert len(headers["X-Request-ID"]) == 32
    assert json.loads(body)["type"].endswith("/too-many-connections")
    for _, writer in streams:  # the streams were not touched
        assert not writer.is_closing()
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",  # no Host
        b"POST /events/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /secret-path\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"G\xffT / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    ],
)
async def test_requests_the_parser_refuses_get_a_problem_and_one_log_line(
    server: str, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await raw_request(server, request_bytes)
    status, headers, body = split_response(answer)
    assert status.split()[1] == "400", status  # HTTP/1.0: aiohttp knows no version yet
    assert headers["Content-Type"] == "application/problem+json"
    assert len(headers["X-Request-ID"]) == 32
    problem = json.loads(body)
    assert problem["status"] == 400
    assert problem["type"].endswith("/malformed-request")
    assert b"secret-path" not in answer  # nothing of the request is echoed
    assert b"/healthz" not in answer
    refused = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(("fd_limit", "cap"), [(1024, 922), (20_000, 18_000), (100, 36), (10, 1)])
def test_the_connection_cap_leaves_fds_for_files_and_logs(fd_limit: int, cap: int) -> None:
    assert connection_cap(fd_limit) == cap
