"""Log tails against hostile clients (issue 10): big tails, many filters, huge numbers,
odd file names, and who may read the server's own log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer import sse
from streamer.sources.loghub import FEW_NEEDLES, MAX_NEEDLES, NeedleSet

from .helpers import assert_problem, host_port, non_loopback_address, read_until, wait_for
from .logs_support import append, tail

StartServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def server(logs_dir: Path, start_server: StartServer) -> str:
    return await start_server(logs=logs_dir, log_file=logs_dir / "streamer.log")


async def log_subscribers(http: aiohttp.ClientSession, server: str, name: str) -> int:
    async with http.get(f"{server}/api/logs") as response:
        listing = await response.json()
    return sum(e["subscribers"] for e in listing["logs"] if e["name"] == name)


@contextlib.contextmanager
def stalled_requests(server: str, requests: list[bytes]) -> Iterator[list[socket.socket]]:
    """One connection per request, each sent and then never read (tiny receive buffers)."""
    sockets = []
    try:
        for request in requests:
            sock = socket.socket()
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(host_port(server))
            sock.sendall(request)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def long_lines(count: int, width: int) -> bytes:
    return b"".join(b"%06d %s\n" % (n, b"x" * (width - 8)) for n in range(count))


# --- 1. ?tail=N: bounded in bytes, read off the feed's lock, not kept once sent -------------


async def test_big_tails_registering_do_not_delay_live_lines(
    start_server: StartServer, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    """20 clients ask for the last 10,000 lines of 6 KB each (60 MB) and read nothing; a
    subscriber already there still gets a new line at once. (Before: the tails were read
    one after another under the feed's lock, and the line waited for all of them.)"""
    server = await start_server(logs=logs_dir)
    log = logs_dir / "big.log"
    log.write_bytes(long_lines(10_000, 6000))
    request = b"GET /logs/big.log?tail=10000 HTTP/1.1\r\nHost: t\r\n\r\n"
    async with tail(http, server, "big.log") as watcher:
        with stalled_requests(server, [request] * 20):

            async def all_following() -> bool:
                return await log_subscribers(http, server, "big.log") == 21

            await wait_for(all_following)
            appended = time.monotonic()
            append(log, b"live line\n")
            await watcher.wait_text("data: live line\n\n", timeout=2)
            assert time.monotonic() - appended < 2


async def test_a_resume_catch_up_to_a_reader_that_stalls_is_cut_after_send_timeout(
    start_server: StartServer, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    """Catching up from an old offset writes as the client reads; one that reads nothing
    is cut after --send-timeout (before, it stayed until its backlog overflowed)."""
    server = await start_server(logs=logs_dir, send_timeout=0.5)
    log = logs_dir / "big.log"
    log.write_bytes(long_lines(2_000, 2000))  # 4 MB to catch up on
    resume = f"Last-Event-ID: {os.stat(log).st_ino}-0"
    request = f"GET /logs/big.log HTTP/1.1\r\nHost: t\r\n{resume}\r\n\r\n".encode()
    with stalled_requests(server, [request]):

        async def following(count: int) -> bool:
            return await log_subscribers(http, server, "big.log") == count

        await wait_for(lambda: following(1))
        await wait_for(lambda: following(0), timeout=5)


async def test_a_tail_is_the_newest_lines_that_fit_in_max_buffer(
    start_server: StartServer, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    server = await start_server(logs=logs_dir, max_buffer=64 * 1024)
    log = logs_dir / "app.log"
    log.write_bytes(long_lines(500, 1000))  # 500 KB: the last 10,000 lines would be all
    inode = os.stat(log).st_ino
    frames = [
        sse.encode_event(f"{inode}-{(n + 1) * 1000}", "message", f"{n:06d} " + "x" * 992)
        for n in range(500)
    ]
    fitting: list[bytes] = []
    while sum(map(len, fitting)) + len(frames[-len(fitting) - 1]) <= 64 * 1024:
        fitting.insert(0, frames[-len(fitting) - 1])
    assert 60 < len(fitting) < 64  # about 1,050 bytes each
    async with tail(http, server, tail="10000") as stream:
        append(log, b"live\n")
        await stream.wait_text("data: live\n\n")
    live = sse.encode_event(f"{inode}-500005", "message", "live")
    expected = sse.encode_preamble(2000) + b"".join(fitting) + live
    assert stream.text == expected.decode()


def awaiting(task: asyncio.Task[object]) -> Iterator[Any]:
    """The coroutines ``task`` is awaiting through, outermost first."""
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        yield coro
        coro = coro.cr_await


def bytes_held(coros: list[Any]) -> int:
    """Bytes held by the locals of ``coros`` (bytes, and lists or tuples of them)."""
    held = 0
    for coro in coros:
        for value in coro.cr_frame.f_locals.values() if coro.cr_frame is not None else ():
            values = value if isinstance(value, list | tuple) else [value]
            held += sum(len(v) for v in values if isinstance(v, bytes | bytearray))
    return held


async def test_an_idle_stream_does_not_keep_its_tail(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    log.write_bytes(long_lines(2000, 6000))  # 12 MB; the tail sends the last 1 MiB of it
    async with tail(http, server, tail="10000") as stream:
        await stream.wait_text("001999 ", timeout=10)
        assert len(stream.text) > 1_000_000
        chains = [list(awaiting(task)) for task in asyncio.all_tasks()]
        handlers = [
            chain[[c.cr_code.co_name for c in chain].index("stream_log") :]
            for chain in chains
            if "stream_log" in [c.cr_code.co_name for c in chain]
        ]
        assert len(handlers) == 1
        assert bytes_held(handlers[0]) < 64 * 1024


# --- 2. ?grep=: one pass over all filters, and a bounded number of them ---------------------


def test_needle_set_finds_every_filter_in_one_pass() -> None:
    """Overlapping filters and filters that are prefixes of others, plain and indexed, as
    filters come and go: always exactly the filters that occur in the line."""
    rng = random.Random(7)
    needles = NeedleSet()
    used: dict[str, int] = {}
    lines = ["".join(rng.choice("ab c") for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for step in range(1000):
        if used and rng.random() < 0.25:
            gone = rng.choice(sorted(used))
            needles.remove(gone)
            used[gone] -= 1
            if not used[gone]:
                del used[gone]
        else:
            new = "".join(rng.choice("abc") for _ in range(rng.randint(1, 6)))
            if new in used or len(used) < MAX_NEEDLES:
                needles.add(new)
                used[new] = used.get(new, 0) + 1
        if step % 25 == 0:
            for line in lines:
                assert needles.found_in(line) == {n for n in used if n in line}
    assert len(needles) == len(used) > FEW_NEEDLES  # the index was used too


async def open_stream(
    server: str, target: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(f"GET {target} HTTP/1.0\r\n\r\n".encode())
    await read_until(reader, b": connected\n\n")
    return reader, writer


async def test_a_feed_takes_a_bounded_number_of_distinct_filters(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    streams = [await open_stream(server, f"/logs/app.log?grep=F{n:03d}") for n in range(256)]
    try:
        async with http.get(f"{server}/logs/app.log", params={"grep": "one too many"}) as r:
            assert r.status == 503
            assert r.headers["Content-Type"] == "application/problem+json"
            assert r.headers["Retry-After"] == "5"
            assert (await r.json())["type"].endswith("/too-many-filters")
        async with tail(http, server, grep="f007") as shared:  # in use: shared, so accepted
            append(logs_dir / "app.log", b"f0071 and F123 here\nnothing\n")
            await shared.wait_text("data: f0071 and F123 here\n")
            for n in (7, 123):
                await read_until(streams[n][0], b"data: f0071 and F123 here\n\n")
            append(logs_dir / "app.log", b"F200\n")
            got = await read_until(streams[200][0], b"\n\n", timeout=5)
            assert got.endswith(b"data: F200\n\n")  # not "nothing", not the line before
        streams.pop()[1].close()  # one filter fewer: room for a new one

        async def admitted() -> bool:
            async with http.get(f"{server}/logs/app.log", params={"grep": "new"}) as r:
                return r.status == 200

        await wait_for(admitted)
    finally:
        for _, writer in streams:
            writer.close()


# --- 3. numbers in the query -----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["tail=" + "9" * 4301, "tail=" + "0" * 5000 + "1", "tail=1&tail=2", "grep=a&grep=b"],
)
async def test_huge_or_repeated_parameters_are_400(
    server: str, http: aiohttp.ClientSession, query: str
) -> None:
    async with http.get(f"{server}/logs/app.log?{query}") as r:
        body = await assert_problem(r, 400, "bad-query")
    assert body["parameter"] == query.partition("=")[0]


# --- 4. names that are not UTF-8 -------------------------------------------------------------


async def test_a_name_that_is_not_utf8_is_neither_listed_nor_served(
    server: str, logs_dir: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    os.close(os.open(os.fsencode(logs_dir) + b"/bad-\xff.log", os.O_CREAT | os.O_WRONLY))
    async with http.get(f"{server}/api/logs") as r:
        assert r.status == 200
        names = [entry["name"] for entry in (await r.json())["logs"]]
    assert names == ["app.log", "streamer.log"]
    for target in ("/logs/bad-%FF.log", "/logs/bad-%ED%B3%BF.log"):  # as bytes, as a surrogate
        status, body = await get_raw(server, target)
        assert (status, body) == await get_raw(server, "/logs/missing.log")
        assert status == 404
    async with tail(http, server) as stream:  # the watcher outlives a change to that file
        append(Path(os.fsdecode(os.fsencode(logs_dir) + b"/bad-\xff.log")), b"x\n")
        await wait_for(lambda: any("not UTF-8" in r.getMessage() for r in caplog.records))
        append(logs_dir / "app.log", b"still live\n")
        await stream.wait_text("data: still live\n\n")
        append(logs_dir / "app.log", b"and later\n")
        await stream.wait_text("data: and later\n\n")


async def get_raw(server: str, target: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(f"GET {target} HTTP/1.0\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nContent-Type: application/problem+json\r\n" in head
    return int(head.split()[1]), body


# --- 5. the server's own log: loopback clients only, unless --own-log-access anyone ----------


async def test_the_own_log_is_for_loopback_clients_only(
    start_server: StartServer, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    address = non_loopback_address()
    (logs_dir / "alias.log").symlink_to("streamer.log")  # the same file by another name
    own_log = logs_dir / "streamer.log"
    remote = await start_server(host=address, logs=logs_dir, log_file=own_log)
    local = await start_server(logs=logs_dir, log_file=own_log)
    anyone = await start_server(
        host=address, logs=logs_dir, log_file=own_log, own_log_access="anyone"
    )
    assert remote.startswith(f"http://{address}:")  # so the server sees this address
    async with http.get(f"{remote}/api/logs") as r:
        assert [entry["name"] for entry in (await r.json())["logs"]] == ["app.log"]
    missing = await get_raw(remote, "/logs/missing.log")
    for name in ("streamer.log", "alias.log"):
        assert await get_raw(remote, f"/logs/{name}") == missing
    for server in (local, anyone):
        async with http.get(f"{server}/api/logs") as r:
            names = [entry["name"] for entry in (await r.json())["logs"]]
        assert names == ["alias.log", "app.log", "streamer.log"]
        async with tail(http, server, "streamer.log") as stream:
            append(own_log, b"marker for %s\n" % server.encode())
            await stream.wait_text(f"marker for {server}\n")
