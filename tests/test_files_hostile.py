"""Hostile clients against ``/files/`` and ``/api/files``: pipelined requests that are never
read, downloads that stall, hashes of big files, names that are not UTF-8, garbage input.

Every promise is checked on a real server over real sockets, bounded in time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from streamer.app import create_app
from streamer.digests import MAX_JOBS
from streamer.server import running
from streamer.web.keys import DIGESTS

from .helpers import (
    cli_server,
    hang_up,
    host_port,
    make_settings,
    raw_request,
    split_response,
    wait_for,
    was_reset,
)

StartServer = Callable[..., Awaitable[str]]
SMALL = os.urandom(16 * 1024)
BIG = 4 * 1024**3  # sparse: instant to make, and a real second or two of hashing


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "small.bin").write_bytes(SMALL)
    (root / "hello.txt").write_text("hello\n")
    return root.resolve()


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def is_open(path: Path) -> bool:
    """Does this process (the in-process server) hold ``path`` open?"""
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())


def hash_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("streamer-hash")]


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def timed_get(http: aiohttp.ClientSession, url: str) -> float:
    started = time.monotonic()
    async with http.get(url) as response:
        assert response.status == 200
        await response.read()
    return time.monotonic() - started


# --- pipelined requests whose answers are never read ------------------------------------


async def test_pipelined_requests_never_read_keep_memory_bounded_and_get_cut(
    media: Path, http: aiohttp.ClientSession
) -> None:
    # 2 MB of requests for a 16 KiB file: 45,000 answers, 750 MB if they were all buffered
    # (the code before this test took the server to 1.3 GB with 860 KB of requests)
    request = b"GET /files/small.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    flood = request * (2_000_000 // len(request))
    with cli_server("--media", str(media), "--send-timeout", "1") as srv:
        pid = srv.process.pid
        async with http.get(f"{srv.url}/files/small.bin") as response:  # warm up
            assert await response.read() == SMALL
        before = rss(pid)
        started = time.monotonic()
        _, writer = await asyncio.open_connection(*host_port(srv.url), limit=16 * 1024)
        writer.write(flood)  # and never read
        try:
            peak = before

            async def cut_with_bounded_memory() -> bool:
                nonlocal peak
                peak = max(peak, rss(pid))
                assert peak - before < 40 * 1024 * 1024, f"server grew by {peak - before} bytes"
                # meanwhile a normal client is answered at once
                assert await timed_get(http, f"{srv.url}/api/files") < 1
                assert await timed_get(http, f"{srv.url}/files/small.bin") < 1
                return was_reset(writer)

            await wait_for(cut_with_bounded_memory, timeout=10, interval=0.1)
            assert time.monotonic() - started >= 0.9  # not before --send-timeout
        finally:
            await hang_up(writer)


async def test_pipelined_errors_and_redirects_never_read_get_cut(
    media: Path, start_server: StartServer
) -> None:
    # aiohttp's own answers wait for a full buffer with no timeout: these would hang forever
    server = await start_server(media=media, send_timeout=0.5)
    requests = [
        b"GET /files/nope HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /files HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/files HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for request in requests:
        _, writer = await asyncio.open_connection(*host_port(server), limit=1024)
        writer.write(request * (2_000_000 // len(request)))  # answers beyond all buffers
        try:
            await wait_for(lambda: was_reset(writer), timeout=5)  # noqa: B023
        finally:
            await hang_up(writer)


# --- big downloads that stall --------------------------------------------------------------


async def test_stalled_big_download_is_cut_and_its_file_closed(
    media: Path, start_server: StartServer
) -> None:
    big = sparse(media / "big.iso", 256 * 1024**2)  # far more than the socket buffers hold
    server = await start_server(media=media, send_timeout=0.5)
    reader, writer = await asyncio.open_connection(*host_port(server), limit=16 * 1024)
    writer.write(b"GET /files/big.iso HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    try:
        await wait_for(lambda: is_open(big), 5)
        # then the client reads no more: sendfile(2) waits, and is cut after send_timeout
        await wait_for(lambda: not is_open(big), 5)
        received = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):  # what was in flight
            received += len(chunk)
        assert received < 256 * 1024**2
    finally:
        await hang_up(writer)


async def test_slow_but_steady_reader_is_not_cut(media: Path, start_server: StartServer) -> None:
    size = 64 * 1024**2
    sparse(media / "big.iso", size)
    server = await start_server(media=media, send_timeout=0.5)
    reader, writer = await asyncio.open_connection(*host_port(server), limit=16 * 1024)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    writer.write(b"GET /files/big.iso HTTP/1.1\r\nHost: x\r\nRange: bytes=0-16777215\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    received = 0
    started = time.monotonic()
    try:
        while received < 16 * 1024**2:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert chunk, f"cut after {received} bytes, {time.monotonic() - started:.1f} s"
            received += len(chunk)
            if time.monotonic() - started < 2:  # two seconds at a few MB/s: four timeouts
                await asyncio.sleep(0.05)  # pacing the reader, not waiting for a condition
    finally:
        await hang_up(writer)
    assert received == 16 * 1024**2


# --- hashing big files ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(media: Path) -> AsyncIterator[tuple[str, web.Application]]:
    app = create_app(make_settings(media=media))
    async with running(make_settings(media=media), app) as url:
        yield url, app


@contextlib.asynccontextmanager
async def downloads_under_way(server: str, names: list[str]) -> AsyncIterator[None]:
    """A GET of each file whose client reads nothing yet: the downloads stay under way."""
    writers = []
    try:
        for name in names:
            _, writer = await asyncio.open_connection(*host_port(server))
            writer.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
            )
            writer.write(f"GET /files/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            writers.append(writer)
        yield
    finally:
        for writer in writers:
            await hang_up(writer)


async def test_a_head_of_a_big_file_starts_no_hash(
    media: Path, http: aiohttp.ClientSession
) -> None:
    """Six HEADs of big files once took every worker of the default pool for minutes: a
    request that sends no body must not make the server read a whole file."""
    for index in range(6):
        sparse(media / f"big{index}.iso", BIG)
    async with served(media) as (server, app):
        for index in range(6):
            async with http.head(f"{server}/files/big{index}.iso") as response:
                assert response.status == 200
                assert "Repr-Digest" not in response.headers
        assert app[DIGESTS].hashing() == 0


async def test_hashing_big_files_never_holds_up_listings_and_small_files(
    media: Path, http: aiohttp.ClientSession
) -> None:
    names = [sparse(media / f"big{index}.iso", BIG).name for index in range(8)]
    async with served(media) as (server, app), downloads_under_way(server, names):
        await wait_for(lambda: app[DIGESTS].hashing() == MAX_JOBS)  # the others go without
        asked = [
            asyncio.ensure_future(http.get(f"{server}/files/big{index}.iso?hash=sha256"))
            for index in range(2)
        ]
        try:
            assert app[DIGESTS].hashing() == MAX_JOBS  # bounded
            for _ in range(5):
                assert await timed_get(http, f"{server}/api/files") < 0.5
                assert await timed_get(http, f"{server}/files/small.bin") < 0.5
                assert await timed_get(http, f"{server}/files/hello.txt?hash=sha256") < 0.5
            assert app[DIGESTS].hashing() > 0  # they really were running all along
        finally:
            for task in asked:
                task.cancel()
            await asyncio.gather(*asked, return_exceptions=True)


async def test_shutdown_does_not_wait_for_a_hash(media: Path) -> None:
    sparse(media / "huge.iso", 16 * 1024**3)  # eight seconds of hashing
    async with served(media) as (server, app), downloads_under_way(server, ["huge.iso"]):
        await wait_for(lambda: app[DIGESTS].hashing() == 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1
    await wait_for(
        lambda: (
            not any(
                t.name.startswith("streamer-hash") and t.is_alive()
                for t in __import__("threading").enumerate()
            )
        ),
        2,
    )


@pytest.mark.parametrize("query", ["?hash=sha256", ""])
async def test_a_big_hash_stops_when_its_client_leaves(media: Path, query: str) -> None:
    """``?hash=`` waits for it; a plain GET has it hashed while the body goes out: either
    way, a client that leaves takes the hash with it."""
    sparse(media / "huge.iso", 16 * 1024**3)
    async with served(media) as (server, app):
        async with downloads_under_way(server, ["huge.iso" + query]):
            await wait_for(lambda: app[DIGESTS].hashing() == 1)
        await wait_for(lambda: app[DIGESTS].hashing() == 0, 2)  # not eight seconds later


async def test_a_big_file_sent_whole_gets_its_digest_for_later_responses(
    media: Path, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(17 * 1024**2)  # past INLINE_MAX: hashed while it is downloaded
    (media / "big.bin").write_bytes(data)
    async with served(media) as (server, app):
        async with http.get(f"{server}/files/big.bin") as response:
            assert "Repr-Digest" not in response.headers
            assert await response.read() == data
        await wait_for(lambda: app[DIGESTS].hashing() == 0, 5)
        async with http.head(f"{server}/files/big.bin") as response:
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            assert response.headers["Repr-Digest"] == f"sha-256=:{digest}:"


# --- names that are not UTF-8 ------------------------------------------------------------


@pytest.fixture
def bad_names(media: Path) -> Path:
    root = os.fsencode(media)
    (media / "sub").mkdir()
    with open(root + b"/bad\xff.txt", "wb") as file:
        file.write(b"bad bytes\n")
    os.mkdir(root + b"/dir\xfe")
    os.symlink(root + b"/bad\xff.txt", media / "good.txt")
    return media


async def test_listing_leaves_out_names_that_are_not_utf8(
    bad_names: Path, start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(media=bad_names)
    async with http.get(f"{server}/api/files") as response:
        assert response.status == 200
        listing = await response.json()
    assert [entry["name"] for entry in listing["entries"]] == [
        "good.txt",
        "hello.txt",
        "small.bin",
        "sub",
    ]


async def test_download_of_a_file_named_in_bad_bytes(
    bad_names: Path, start_server: StartServer
) -> None:
    server = await start_server(media=bad_names)
    raw = await raw_request(
        server, b"GET /files/good.txt?download=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"bad_.txt\"; filename*=UTF-8''bad%EF%BF%BD.txt"
    )
    assert body == b"bad bytes\n"


@pytest.mark.parametrize(
    "target",
    [
        "/files/bad%FF.txt",
        "/files/bad%FF.txt?download=1",
        "/files/dir%FE",
        "/files/dir%FE/",
        "/files/%ED%A0%80",  # an encoded lone surrogate
        "/api/files?dir=dir%FE",
        "/api/files?dir=%ED%A0%80",
    ],
)
async def test_bad_bytes_in_a_url_are_404(
    bad_names: Path, start_server: StartServer, target: str
) -> None:
    server = await start_server(media=bad_names)
    raw = await raw_request(
        server, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    status, headers, _ = split_response(raw)
    assert status == "HTTP/1.1 404 Not Found"
    assert headers["Content-Type"] == "application/problem+json"


# --- garbage input: a 4xx problem or a plain answer, never a 500 ------------------------


BAD_INPUTS = [
    ("/files/hello.txt", "Range: bytes=" + "9" * 4089 + "-"),
    ("/files/hello.txt", "Range: bytes=0-" + "9" * 4000),
    ("/files/hello.txt", "Range: bytes=-" + "9" * 4000),
    ("/files/hello.txt", "Range: bytes=" + ",".join(["0-0"] * 2000)),
    ("/files/hello.txt", "Range: bytes=\xff-\xff"),
    ("/files/hello.txt", "If-Modified-Since: garbage \xff"),
    ("/files/hello.txt", "If-Modified-Since: Mon, 99 Foo 99999999999 99:99:99 GMT"),
    ("/files/hello.txt", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 +99999999999999"),
    ("/files/hello.txt", "If-Range: Sun, 06 Nov 99999999999999999999 08:49:37 GMT"),
    ("/files/hello.txt", 'If-None-Match: "' + "a" * 5000),
    ("/files/hello.txt", "If-Match: W/\xff"),
    ("/files/hello.txt", "Accept-Encoding: gzip;q=" + "9" * 5000),
    ("/files/hello.txt", "Accept-Encoding: gzip;q=nan, br;q=inf"),
    ("/files/hello.txt?download=" + "9" * 5000, ""),
    ("/files/hello.txt?download=%FF", ""),
    ("/files/hello.txt?hash=%00", ""),
    ("/api/files?dir=a%00b", ""),
    ("/api/files?dir=%FF%FE", ""),
    ("/api/files?dir=" + "a" * 5000, ""),
    ("/api/files?dir=" + "a/" * 2000, ""),
    ("/files/" + "a" * 5000, ""),
    ("/files/" + "%25" * 1000, ""),
]


@pytest.mark.parametrize(("target", "header"), BAD_INPUTS, ids=range(len(BAD_INPUTS)))
async def test_garbage_input_never_gets_a_500(
    media: Path, start_server: StartServer, target: str, header: str
) -> None:
    server = await start_server(media=media)
    extra = header + "\r\n" if header else ""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    status, headers, body = split_response(await raw_request(server, request.encode("latin-1")))
    code = int(status.split()[1])
    assert code < 500, body
    if code >= 400:
        assert headers["Content-Type"] == "application/problem+json"
