"""Live log tails over a real server: appends, rotation, truncation, resume, tail, grep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from streamer.server import running
from streamer.sse import ParsedEvent, parse_stream

from .helpers import (
    assert_problem,
    host_port,
    make_settings,
    metric,
    raw_request,
    require,
    split_response,
    wait_for,
)
from .helpers import read_until as read_stream_until
from .logs_support import append, tail
from .sse_client import EventStream


@pytest.fixture
async def server(logs_dir: Path, start_server: Callable[..., Awaitable[str]]) -> str:
    return await start_server(logs=logs_dir, log_file=logs_dir / "streamer.log")


def truncate_and_write(path: Path, data: bytes) -> None:
    """What ``copytruncate`` and the next writes do, as one step."""
    with open(path, "r+b") as log:
        log.truncate(0)
        log.write(data)


def lines(events: list[ParsedEvent]) -> list[str]:
    return [e.data for e in events if e.event == "message"]


async def test_appends_arrive_in_order_with_byte_offsets_as_ids(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    append(log, b"before\n")  # already there: not sent without ?tail
    inode = os.stat(log).st_ino
    async with tail(http, server) as stream:
        append(log, b"one\n")
        append(log, b"two\r\nthree\n")
        await stream.wait_text("data: three\n\n")
        start = stream.text.index("id: ")
        assert stream.text[start:] == (
            f"id: {inode}-11\nevent: message\ndata: one\n\n"
            f"id: {inode}-16\nevent: message\ndata: two\n\n"
            f"id: {inode}-22\nevent: message\ndata: three\n\n"
        )
        for n in range(200):
            append(log, f"line {n}\n".encode())
        events = await stream.wait_events(203)
    assert lines(events)[3:] == [f"line {n}" for n in range(200)]


async def test_a_line_written_in_pieces_arrives_once_whole(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"par")
        await asyncio.sleep(0.05)  # let the watcher see the partial line on its own
        append(log, b"tial li")
        await asyncio.sleep(0.05)
        append(log, b"ne\nnext\n")
        events = await stream.wait_events(2)
    assert lines(events) == ["partial line", "next"]


async def test_logrotate_move_and_create_loses_nothing(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"a1\na2\n")
        await stream.wait_text("data: a2\n")
        append(log, b"a3\nunfinished")  # written just before the rotation
        os.rename(log, logs_dir / "app.log.1")
        append(log, b"b1\n")
        events = await stream.wait_events(6)
    new_inode = os.stat(log).st_ino
    assert [(e.event, e.data) for e in events] == [
        ("message", "a1"),
        ("message", "a2"),
        ("message", "a3"),
        ("message", "unfinished"),  # the old file's last bytes, before the switch
        ("rotated", "rotated"),
        ("message", "b1"),
    ]
    assert events[4].id == f"{new_inode}-0"
    assert events[5].id == f"{new_inode}-3"


async def test_copytruncate_is_seen_even_when_the_file_regrows(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"first line\nsecond line\n")
        await stream.wait_text("data: second line\n")
        shutil.copy(log, logs_dir / "app.log.1")
        truncate_and_write(log, b"new content that is longer\n")  # refills past the old offset
        events = await stream.wait_events(4)
    assert [(e.event, e.data) for e in events] == [
        ("message", "first line"),
        ("message", "second line"),
        ("truncated", "truncated"),
        ("message", "new content that is longer"),
    ]


async def test_deleted_then_recreated(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"x\n")
        await stream.wait_text("data: x\n")
        log.unlink()
        await stream.wait_text("event: deleted\n")
        append(log, b"again\n")
        events = await stream.wait_events(4)
    assert [(e.event, e.data) for e in events] == [
        ("message", "x"),
        ("deleted", "deleted"),
        ("created", "created"),
        ("message", "again"),
    ]


async def test_resume_by_id_while_lines_keep_coming(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    total = 600
    writer_done = asyncio.Event()

    async def write_lines() -> None:
        for n in range(total):
            append(log, f"n={n}\n".encode())
            if n % 20 == 0:
                await asyncio.sleep(0.002)
        writer_done.set()

    received: list[str] = []
    async with tail(http, server) as stream:
        writer = asyncio.create_task(write_lines())
        first = await stream.wait_events(50)
    received += lines(first)
    last_id = first[-1].id
    assert last_id is not None
    async with tail(http, server, last_event_id=last_id) as stream:
        await writer
        events = await stream.wait_events(total - len(received), timeout=10)
    received += lines(events)
    assert received == [f"n={n}" for n in range(total)]


async def test_resume_with_query_parameter_and_reset_cases(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    inode = os.stat(log).st_ino
    append(log, b"one\ntwo\n")
    async with tail(http, server, lastEventId=f"{inode}-4") as stream:
        events = await stream.wait_events(1)
    assert (events[0].id, events[0].data) == (f"{inode}-8", "two")
    for bad, reason in [("nonsense", "malformed"), ("1-0", "gone"), (f"{inode}-999", "unknown")]:
        async with tail(http, server, last_event_id=bad) as stream:
            events = await stream.wait_events(1)
        assert events[0].event == "reset"
        assert f'"reason":"{reason}"' in events[0].data
        assert events[0].id == f"{inode}-8"  # reconnecting with it continues from here


async def test_tail_n_reads_backwards_through_a_big_file(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "big.log"
    log.write_bytes(b"".join(b"row %06d %s\n" % (n, b"x" * 90) for n in range(30_000)))  # ~3 MB
    async with tail(http, server, "big.log", tail="5") as stream:
        events = await stream.wait_events(5)
        append(log, b"live\n")
        events = await stream.wait_events(6)
    assert [e.data[:10] for e in events[:5]] == [f"row {n:06d}" for n in range(29_995, 30_000)]
    assert events[5].data == "live"


async def test_invalid_utf8_and_a_1_mb_line(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"bad \xff\xfe bytes\n")
        append(log, b"y" * 1_000_000 + b"\nafter\n")
        events = await stream.wait_events(3, timeout=10)
    assert events[0].data == "bad \ufffd\ufffd bytes"
    assert events[1].event == "cut"
    assert events[1].data == "y" * 64 * 1024
    assert (events[2].event, events[2].data) == ("message", "after")
    assert events[2].id == f"{os.stat(log).st_ino}-{13 + 1_000_001 + 6}"


async def test_grep_filters_case_insensitively(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server, grep="ERROR") as errors, tail(http, server) as everything:
        append(log, b"info: fine\nerror: broken\nINFO: ok\nan Error again\n")
        assert lines(await errors.wait_events(2)) == ["error: broken", "an Error again"]
        assert len(lines(await everything.wait_events(4))) == 4


async def test_many_subscribers_share_one_tailer(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(tail(http, server)) for _ in range(20)]
        async with http.get(f"{server}/api/logs") as r:
            listing = await r.json()
        app_log = next(entry for entry in listing["logs"] if entry["name"] == "app.log")
        assert app_log["subscribers"] == 20
        assert await metric(http, server, "streamer_log_tailers") == 1
        append(log, b"shared\n")
        for stream in streams:
            assert lines(await stream.wait_events(1)) == ["shared"]

    async def no_tailers() -> bool:
        return await metric(http, server, "streamer_log_tailers") == 0

    await wait_for(no_tailers)


async def test_the_servers_own_log_is_tailable(
    server: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with tail(http, server, "streamer.log") as stream:
        async with http.get(f"{server}/healthz", headers={"X-Request-ID": "own-log-1"}):
            pass
        await stream.wait_text("rid=own-log-1", timeout=5)


@pytest.mark.parametrize(
    "path",
    [
        "/logs/missing.log",
        "/logs/../pyproject.toml",
        "/logs/%2e%2e/%2e%2e/etc/passwd",
        "/logs/..%2fapp.log",
        "/logs/.hidden",
        "/logs/sub%5capp.log",
    ],
)
async def test_names_outside_or_missing_are_404(server: str, logs_dir: Path, path: str) -> None:
    (logs_dir / ".hidden").write_text("secret\n")
    status, headers, _ = split_response(
        await raw_request(server, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    )
    assert status == "HTTP/1.0 404 Not Found"
    assert headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("query", ["tail=-1", "tail=x", "tail=10001", "grep="])
async def test_bad_query_is_400(server: str, http: aiohttp.ClientSession, query: str) -> None:
    async with http.get(f"{server}/logs/app.log?{query}") as r:
        body = await assert_problem(r, 400, "bad-query")
    assert body["parameter"] == query.partition("=")[0]


async def test_shutdown_cancels_the_watcher_and_tailers_cleanly(
    logs_dir: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    before = asyncio.all_tasks()
    server = running(make_settings(logs=logs_dir))
    url = await server.__aenter__()
    assert any(t.get_name() == "streamer-watcher" for t in asyncio.all_tasks())
    async with tail(http, url) as stream:
        append(logs_dir / "app.log", b"bye\n")
        await stream.wait_text("data: bye\n")
        await server.__aexit__(None, None, None)  # while the tail is open
        await stream.wait_end(timeout=3)
    await wait_for(lambda: asyncio.all_tasks() - before <= {asyncio.current_task()})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextlib.contextmanager
def no_new_inotify_instances() -> Iterator[None]:
    """Nobody on this machine can start an inotify watch until the block ends."""
    old_limit = INOTIFY_INSTANCES.read_text()
    INOTIFY_INSTANCES.write_text("0")
    try:
        yield
    finally:
        INOTIFY_INSTANCES.write_text(old_limit)


async def test_falls_back_to_polling_when_the_os_refuses_to_watch(
    start_server: Callable[..., Awaitable[str]],
    logs_dir: Path,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require(os.access(INOTIFY_INSTANCES, os.W_OK), "needs root to lower the inotify limit")

    def fell_back() -> bool:
        return any("polling every" in r.getMessage() for r in caplog.records)

    with no_new_inotify_instances():
        server = await start_server(logs=logs_dir)
        await wait_for(fell_back)
    assert sum("polling every" in r.getMessage() for r in caplog.records) == 1  # said once
    async with tail(http, server) as stream:
        append(logs_dir / "app.log", b"seen by polling\n")
        assert lines(await stream.wait_events(1)) == ["seen by polling"]


# --- regressions found in review ------------------------------------------------------------


async def test_a_followed_name_swapped_for_a_symlink_outside_is_not_read(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    outside = logs_dir.parent / "secret.txt"
    outside.write_text("secret\n")
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"inside\n")
        await stream.wait_text("data: inside\n")
        (logs_dir / "tmp.lnk").symlink_to(outside)
        os.replace(logs_dir / "tmp.lnk", log)
        await stream.wait_text("event: deleted\n")
        append(outside, b"more secret\n")
        log.unlink()
        append(log, b"real again\n")
        events = await stream.wait_events(4)
    assert [(e.event, e.data) for e in events] == [
        ("message", "inside"),
        ("deleted", "deleted"),
        ("created", "created"),
        ("message", "real again"),
    ]
    assert "secret" not in stream.text


async def test_a_log_replaced_by_a_folder_then_a_file(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        log.unlink()
        log.mkdir()
        await stream.wait_text("event: deleted\n")
        log.rmdir()
        append(log, b"after\n")
        events = await stream.wait_events(3)
    assert [e.event for e in events] == ["deleted", "created", "message"]


async def test_two_names_for_one_file_both_get_live_lines(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    (logs_dir / "alias.log").symlink_to(logs_dir / "app.log")
    async with tail(http, server) as direct, tail(http, server, "alias.log") as alias:
        append(logs_dir / "app.log", b"for both\n")
        assert lines(await direct.wait_events(1)) == ["for both"]
        assert lines(await alias.wait_events(1)) == ["for both"]


@pytest.mark.parametrize("query", ["tail=%C2%B2", "lastEventId=1-%C2%B2"])
async def test_non_ascii_digits_are_a_clear_error(
    server: str, http: aiohttp.ClientSession, query: str
) -> None:
    async with http.get(f"{server}/logs/app.log?{query}") as r:
        if query.startswith("tail"):
            assert r.status == 400
        else:
            stream = EventStream(r)
            events = await stream.wait_events(1)
            assert events[0].event == "reset"
            assert '"reason":"malformed"' in events[0].data


async def test_max_line_is_the_same_live_in_tail_and_in_resume(
    start_server: Callable[..., Awaitable[str]], logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    server = await start_server(logs=logs_dir, max_line=10)
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"0123456789ABCDEFGHIJ\nexactly10!\r\nshort\n")
        live = await stream.wait_events(3)
    assert [(e.event, e.data) for e in live] == [
        ("cut", "0123456789"),
        ("message", "exactly10!"),  # ten characters before its \r\n: not too long
        ("message", "short"),
    ]
    async with tail(http, server, tail="3") as stream:
        assert [(e.event, e.data, e.id) for e in await stream.wait_events(3)] == [
            (e.event, e.data, e.id) for e in live
        ]
    async with tail(http, server, last_event_id=live[0].id) as stream:  # resume after a cut
        assert [(e.event, e.data) for e in await stream.wait_events(2)] == [
            ("message", "exactly10!"),
            ("message", "short"),
        ]


async def test_tail_with_grep_finds_the_last_matching_lines(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    append(log, b"error one\n" + b"noise\n" * 5000 + b"ERROR two\nnoise\n")
    async with tail(http, server, tail="2", grep="error") as stream:
        assert lines(await stream.wait_events(2)) == ["error one", "ERROR two"]


async def test_rotation_during_a_slow_catch_up_loses_nothing(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    block = b"".join(b"old %06d %s\n" % (n, b"x" * 200) for n in range(40_000))  # ~8 MB
    append(log, b"first\n" + block)
    inode = os.stat(log).st_ino
    host, port = server.removeprefix("http://").rsplit(":", 1)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the catch-up stalls on it
    slow.connect((host, int(port)))
    slow.sendall(f"GET /logs/app.log HTTP/1.0\r\nLast-Event-ID: {inode}-6\r\n\r\n".encode())
    slow.setblocking(False)
    await wait_for(lambda: log_subscribers(http, server), timeout=5)  # registered, catching up
    async with tail(http, server) as watcher:  # a live subscriber, to know when the tail moved
        append(log, b"OLDTAIL 1\nOLDTAIL 2\n")
        os.rename(log, logs_dir / "app.log.1")
        append(log, b"NEW 1\nNEW 2\n")
        await watcher.wait_text("data: NEW 2\n")
    received = bytearray()
    loop = asyncio.get_running_loop()
    append(log, b"NEW 3\n")
    async with asyncio.timeout(20):
        while b"data: NEW 3\n" not in received:
            received += await loop.sock_recv(slow, 1 << 20)
    slow.close()
    events = list(parse_stream(received.decode().partition("\r\n\r\n")[2]))
    assert lines(events)[:3] == [
        "old 000000 " + "x" * 200,
        "old 000001 " + "x" * 200,
        "old 000002 " + "x" * 200,
    ]
    assert [(e.event, e.data) for e in events[40_000:]] == [
        ("message", "OLDTAIL 1"),
        ("message", "OLDTAIL 2"),
        ("rotated", "rotated"),
        ("message", "NEW 1"),
        ("message", "NEW 2"),
        ("message", "NEW 3"),
    ]


async def test_shutdown_ends_a_subscriber_that_is_still_catching_up(logs_dir: Path) -> None:
    log = logs_dir / "app.log"
    log.write_bytes(b"".join(b"line %06d %s\n" % (n, b"x" * 200) for n in range(40_000)))
    inode = os.stat(log).st_ino
    server = running(make_settings(logs=logs_dir, shutdown_timeout=1.0))
    url = await server.__aenter__()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall(f"GET /logs/app.log HTTP/1.0\r\nLast-Event-ID: {inode}-0\r\n\r\n".encode())
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        assert (await loop.sock_recv(slow, 4096)).startswith(b"HTTP/1.0 200 OK")  # catching up
        started = time.monotonic()
        await server.__aexit__(None, None, None)
        assert time.monotonic() - started < 1.5
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):  # the connection is closed: reading reaches its end
                while await loop.sock_recv(slow, 1 << 20):
                    pass


# --- regressions found in the second review ---------------------------------------------------


async def log_subscribers(http: aiohttp.ClientSession, server: str) -> int:
    return await metric(http, server, "streamer_log_subscribers")


def slow_resume(server: str, name: str, last_id: str) -> socket.socket:
    """A subscriber resuming from ``last_id`` that reads nothing yet: its catch-up stalls."""
    host, port = server.removeprefix("http://").rsplit(":", 1)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(f"GET /logs/{name} HTTP/1.0\r\nLast-Event-ID: {last_id}\r\n\r\n".encode())
    slow.setblocking(False)
    return slow


async def live_socket(server: str, name: str) -> socket.socket:
    """A plain subscriber on a raw socket (cheap to read megabytes from), once it is live."""
    host, port = server.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.connect((host, int(port)))
    sock.sendall(f"GET /logs/{name} HTTP/1.0\r\n\r\n".encode())
    sock.setblocking(False)
    received = b""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while b": connected\n\n" not in received:
            received += await loop.sock_recv(sock, 65536)
    return sock


async def read_until(slow: socket.socket, marker: bytes, timeout: float = 20) -> list[ParsedEvent]:
    received = bytearray()
    loop = asyncio.get_running_loop()
    with slow:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await loop.sock_recv(slow, 1 << 20)
                assert chunk, "connection closed"
                received += chunk
                if marker in received[-(len(chunk) + len(marker)) :]:
                    break
    return list(parse_stream(received.decode().partition("\r\n\r\n")[2]))


async def test_two_rotations_during_a_catch_up_are_all_delivered(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    append(log, b"first\n" + b"".join(b"old %06d %s\n" % (n, b"x" * 200) for n in range(40_000)))
    slow = slow_resume(server, "app.log", f"{os.stat(log).st_ino}-6")
    await wait_for(lambda: log_subscribers(http, server), timeout=5)  # registered, catching up
    async with tail(http, server) as watcher:
        append(log, b"A-last\n")
        os.rename(log, logs_dir / "app.log.1")
        append(log, b"B1\nB2\n")
        await watcher.wait_text("data: B2\n")
        os.rename(log, logs_dir / "app.log.2")
        append(log, b"C1\n")
        await watcher.wait_text("data: C1\n")
    events = await read_until(slow, b"data: C1\n")
    assert lines(events)[:40_000] == [f"old {n:06d} " + "x" * 200 for n in range(40_000)]
    assert [(e.event, e.data) for e in events[40_000:]] == [
        ("message", "A-last"),
        ("rotated", "rotated"),
        ("message", "B1"),
        ("message", "B2"),
        ("rotated", "rotated"),
        ("message", "C1"),
    ]


async def test_truncation_during_a_catch_up_never_mixes_old_and_new(
    start_server: Callable[..., Awaitable[str]], logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    # room for 8 MB of live lines in the backlog while the catch-up is stalled
    server = await start_server(logs=logs_dir, max_buffer=32 << 20)
    log = logs_dir / "app.log"
    append(log, b"first\n" + b"".join(b"old %06d %s\n" % (n, b"x" * 200) for n in range(40_000)))
    slow = slow_resume(server, "app.log", f"{os.stat(log).st_ino}-6")
    new = b"".join(b"new %06d %s\n" % (n, b"y" * 200) for n in range(40_000))
    await wait_for(lambda: log_subscribers(http, server), timeout=5)  # registered, catching up
    live = await live_socket(server, "app.log")
    truncate_and_write(log, new)  # longer than where the catch-up was
    await read_until(live, b"new 039999")  # the tail has seen it all
    events = await read_until(slow, b"new 039999", timeout=60)
    kinds = [e.event for e in events]
    cut = kinds.index("truncated")
    before, after = lines(events[:cut]), lines(events[cut + 1 :])
    assert before == [f"old {n:06d} " + "x" * 200 for n in range(len(before))]
    assert after == [f"new {n:06d} " + "y" * 200 for n in range(40_000)]
    assert "cut" not in kinds


async def test_truncation_while_a_partial_line_is_held(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"done\npartial-old")
        await stream.wait_text("data: done\n")

        async def polled() -> bool:  # the server has read the partial line
            return await metric(http, server, "streamer_log_polls_total") > 0

        await wait_for(polled)
        truncate_and_write(log, b"brand new line one\nline two\n")
        events = await stream.wait_events(4)
    assert [(e.event, e.data) for e in events] == [
        ("message", "done"),
        ("truncated", "truncated"),
        ("message", "brand new line one"),
        ("message", "line two"),
    ]


async def test_a_cut_line_across_catch_up_chunks_matches_live(
    start_server: Callable[..., Awaitable[str]], logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    # one append of 1.4 MB of events, delivered at once: over the default --max-buffer
    server = await start_server(logs=logs_dir, max_line=100, max_buffer=4 << 20)
    log = logs_dir / "app.log"
    head = b"start\n"
    filler_size = (1 << 20) - 150 - len(head)  # the long line starts 150 bytes before 1 MiB
    filler = b"".join(b"%099d\n" % n for n in range(filler_size // 100))
    filler += b"z" * (filler_size - len(filler) - 1) + b"\n"
    async with tail(http, server) as stream:
        append(log, head + filler + b"L" * 150 + b"R" * 150 + b"\nafter\n")
        await stream.wait_text("data: after\n", timeout=10)
    live = stream.events[-2:]
    assert [(e.event, e.data) for e in live] == [("cut", "L" * 100), ("message", "after")]
    async with tail(http, server, last_event_id=f"{os.stat(log).st_ino}-6") as resumed:
        await resumed.wait_text("data: after\n", timeout=10)
    assert [(e.event, e.data, e.id) for e in resumed.events[-2:]] == [
        (e.event, e.data, e.id) for e in live
    ]
    async with tail(http, server, tail="2") as last:
        assert [(e.event, e.data, e.id) for e in await last.wait_events(2)] == [
            (e.event, e.data, e.id) for e in live
        ]


async def test_crlf_split_across_writes_at_exactly_max_line(
    start_server: Callable[..., Awaitable[str]], logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    server = await start_server(logs=logs_dir, max_line=10)
    log = logs_dir / "app.log"
    async with tail(http, server) as stream:
        append(log, b"0123456789\r")

        async def polled() -> bool:
            return await metric(http, server, "streamer_log_polls_total") > 0

        await wait_for(polled)
        append(log, b"\nnext\n")
        events = await stream.wait_events(2)
    assert [(e.event, e.data) for e in events] == [("message", "0123456789"), ("message", "next")]


async def test_a_symlinked_name_follows_its_new_target(
    server: str, logs_dir: Path, http: aiohttp.ClientSession
) -> None:
    (logs_dir / "app-1.log").write_text("")
    (logs_dir / "app-2.log").write_text("")
    (logs_dir / "current.log").symlink_to("app-1.log")
    async with tail(http, server, "current.log") as stream:
        append(logs_dir / "app-1.log", b"one-1\n")
        await stream.wait_text("data: one-1\n")
        (logs_dir / "next.lnk").symlink_to("app-2.log")
        os.replace(logs_dir / "next.lnk", logs_dir / "current.log")
        append(logs_dir / "app-2.log", b"two-1\n")
        events = await stream.wait_events(3)
    assert [(e.event, e.data) for e in events] == [
        ("message", "one-1"),
        ("rotated", "rotated"),
        ("message", "two-1"),
    ]


async def test_an_absurdly_long_id_is_a_malformed_reset(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with tail(http, server, last_event_id="9" * 5000 + "-1") as stream:
        events = await stream.wait_events(1)
    assert events[0].event == "reset"
    assert '"reason":"malformed"' in events[0].data


async def test_a_line_appended_as_soon_as_the_headers_arrive_is_delivered(
    server: str, logs_dir: Path
) -> None:
    """A browser's EventSource fires ``open`` on the headers, and a page that then makes
    the server log something must see it: the subscriber is registered before them."""
    log = logs_dir / "app.log"
    for attempt in range(10):
        reader, writer = await asyncio.open_connection(*host_port(server))
        writer.write(b"GET /logs/app.log HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await read_stream_until(reader, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        append(log, b"right after the headers %d\n" % attempt)
        await read_stream_until(reader, b"data: right after the headers %d\n\n" % attempt)
        writer.close()
        await writer.wait_closed()
