"""``/files/`` with real download clients: resume, segmented downloads, huge and shrinking files.

curl, wget and aria2c run as subprocesses through ``asyncio.create_subprocess_exec``
(the server shares the test's event loop, so nothing here may block it). The
server runs in this process, so its open file descriptors are ``/proc/self/fd``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import struct
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from .helpers import host_port, publish, require_tool, wait_for
from .sse_client import subscribe

MIB = 1024 * 1024
GIB = 1024 * MIB
StartServer = Callable[..., Awaitable[str]]


def media_dir(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "media"
    root.mkdir()
    return root


def random_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def sparse_file(path: Path, size: int, markers: dict[int, bytes]) -> None:
    """A file of ``size`` bytes that is a hole except for ``markers`` (offset: bytes)."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, marker in markers.items():
            f.seek(offset)
            f.write(marker)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


async def run(*argv: str, timeout: float = 30) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of a tool run without blocking the loop."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def bytes_written(pid: int) -> int:
    """Bytes a child process has written so far (``wchar``: curl writes what it downloads)."""
    try:
        with open(f"/proc/{pid}/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    except (FileNotFoundError, ProcessLookupError):
        return 0  # exited and reaped


def unread_bytes(writer: asyncio.StreamWriter) -> int:
    """Bytes waiting in the kernel receive queue of a client socket (FIONREAD)."""
    sock = writer.get_extra_info("socket")
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def send_queue(local_port: int, remote_port: int) -> int:
    """Bytes in the send queue of the loopback TCP socket ``local_port -> remote_port``."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port
            ):
                return int(fields[4].split(":")[0], 16)
    return 0


def responses(caplog: pytest.LogCaptureFixture, agent: str) -> list[int]:
    """Statuses of the responses to ``agent`` in the access log, in order."""
    return [
        int(match[1])
        for record in caplog.records
        if record.name == "aiohttp.access" and agent in record.getMessage()
        for match in [re.search(r'" (\d{3}) ', record.getMessage())]
        if match
    ]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


# 1 and 2: resuming an interrupted download


async def test_curl_resumes_a_partial_download(start_server: StartServer, tmp_path: Path) -> None:
    curl = require_tool("curl")
    root = media_dir(tmp_path)
    data = random_file(root / "big.bin", 8 * MIB, seed=1)
    base = await start_server(media=root)
    out = tmp_path / "out.bin"
    out.write_bytes(data[:3_000_000])  # the interrupted first attempt
    code, stdout, stderr = await run(
        curl, "-sS", "-f", "-C", "-", "-o", str(out), "-w", "%{http_code}", f"{base}/files/big.bin"
    )
    assert code == 0, stderr
    assert stdout == "206"
    assert sha256_file(out) == hashlib.sha256(data).hexdigest()


async def test_wget_continues_a_partial_download(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wget = require_tool("wget")
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    root = media_dir(tmp_path)
    data = random_file(root / "big.bin", 8 * MIB, seed=2)
    base = await start_server(media=root)
    out = tmp_path / "out.bin"
    out.write_bytes(data[:3_000_000])
    code, _, stderr = await run(wget, "-q", "-c", "-O", str(out), f"{base}/files/big.bin")
    assert code == 0, stderr
    assert sha256_file(out) == hashlib.sha256(data).hexdigest()
    await wait_for(lambda: responses(caplog, "Wget/") == [206])


# 3: segmented download


async def test_aria2c_segmented_download_is_byte_exact(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    aria2c = require_tool("aria2c")
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    root = media_dir(tmp_path)
    data = random_file(root / "big.bin", 16 * MIB, seed=3)
    base = await start_server(media=root)
    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    code, stdout, stderr = await run(
        aria2c,
        "-x4",
        "-s4",
        "--min-split-size=1M",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--file-allocation=none",
        "--quiet",
        "--console-log-level=error",
        "-d",
        str(out_dir),
        "-o",
        "got.bin",
        f"{base}/files/big.bin",
    )
    assert code == 0, stdout + stderr
    assert sha256_file(out_dir / "got.bin") == hashlib.sha256(data).hexdigest()
    # It really was segmented: several ranges went out on parallel connections.
    await wait_for(lambda: responses(caplog, "aria2/").count(206) >= 2)


# 4: offsets beyond 32 bits


async def test_ranges_beyond_4_gib(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = media_dir(tmp_path)
    size = 5 * GIB
    middle, tail = os.urandom(16), os.urandom(16)
    sparse_file(root / "huge.bin", size, {4 * GIB + 7: middle, size - 16: tail})
    base = await start_server(media=root)
    url = f"{base}/files/huge.bin"

    async with http.get(url, headers={"Range": "bytes=4294967303-4294967318"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 4294967303-4294967318/5368709120"
        assert response.headers["Content-Length"] == "16"
        assert await response.read() == middle

    async with http.get(url, headers={"Range": "bytes=-16"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == "bytes 5368709104-5368709119/5368709120"
        assert await response.read() == tail

    async with http.head(url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5368709120"
        assert response.headers["Accept-Ranges"] == "bytes"


# 5: a file that shrinks during a download


async def test_file_shrinking_mid_download_ends_the_response(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = media_dir(tmp_path)
    path = root / "big"
    data = random_file(path, 64 * MIB, seed=5)
    base = await start_server(media=root)
    host, port = host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /files/big HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: 67108864\r\n" in head
        first = await asyncio.wait_for(reader.readexactly(64 * 1024), 5)
        assert first == data[: 64 * 1024]
        # Stop reading until the server is stuck on a full socket: our receive queue holds
        # data and the server's send queue does too (the window is closed).
        client_port = writer.get_extra_info("sockname")[1]
        await wait_for(
            lambda: unread_bytes(writer) > 0 and send_queue(port, client_port) > 0, timeout=5
        )
        os.truncate(path, 1 * MIB)
        rest = await asyncio.wait_for(reader.read(), 5)  # to EOF; a timeout is the failure
    finally:
        writer.close()
    assert reader.at_eof()
    assert len(first) + len(rest) < 64 * MIB
    # The documented path: the shortened file was noticed and the connection closed.
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamer.files"]
    assert len(warnings) == 1
    assert "file shrank during a download" in warnings[0]


# 6: no file descriptor leaks


async def test_aborted_downloads_leak_no_file_descriptors(
    start_server: StartServer, tmp_path: Path
) -> None:
    root = media_dir(tmp_path)
    random_file(root / "big.bin", 8 * MIB, seed=6)
    small = random_file(root / "small.txt", 1000, seed=7)
    base = await start_server(media=root)
    host, port = host_port(base)
    before = open_fds()

    async def aborted(number: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            await asyncio.wait_for(reader.readexactly(1000 + number), 5)
        finally:
            writer.transport.abort()  # no FIN handshake, unread data left behind

    for batch in range(5):
        await asyncio.gather(*(aborted(batch * 10 + n) for n in range(10)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(20):
            async with session.get(f"{base}/files/small.txt") as response:
                assert response.status == 200
                assert await response.read() == small
    # All client connections are closed now; the server must let go of everything too.
    await wait_for(lambda: open_fds() == before, timeout=5)


# 7: big downloads and SSE on the same loop


async def test_big_downloads_do_not_stall_event_delivery(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    curl = require_tool("curl")
    root = media_dir(tmp_path)
    path = root / "huge.bin"
    size = 1 * GIB
    sparse_file(path, size, {})
    base = await start_server(media=root)
    async with subscribe(http, base, "lat") as stream:
        downloads = [
            await asyncio.create_subprocess_exec(
                curl,
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                f"{base}/files/huge.bin",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        results = asyncio.gather(*(d.communicate() for d in downloads))
        try:
            # All three are receiving the body before the first event is published.
            await wait_for(
                lambda: all(bytes_written(d.pid) > 4 * MIB for d in downloads), timeout=10
            )
            started = time.monotonic()
            latencies: list[float] = []
            during = 0
            for n in range(20):
                if all(d.returncode is None for d in downloads):
                    during += 1
                sent = time.monotonic()
                await publish(http, base, "lat", repr(sent))
                events = await stream.wait_events(n + 1)
                latencies.append(time.monotonic() - float(events[-1].data))
            publishing = time.monotonic() - started
            outputs = await asyncio.wait_for(asyncio.shield(results), 30)
            downloading = time.monotonic() - started
        finally:
            for download in downloads:
                if download.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        download.kill()
            await asyncio.gather(results, return_exceptions=True)
    assert max(latencies) < 0.1, f"latencies (ms): {[round(x * 1000, 1) for x in latencies]}"
    assert during == 20, (
        f"only {during} of 20 events were published during the downloads "
        f"(publishing took {publishing:.3f}s, the downloads {downloading:.3f}s)"
    )
    for download, (out, err) in zip(downloads, outputs, strict=True):
        assert download.returncode == 0, err.decode()
        assert int(out) == size


# 8: digests


async def test_hash_query_and_repr_digest_match_hashlib(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    root = media_dir(tmp_path)
    data = random_file(root / "one.bin", 1 * MIB, seed=8)
    base = await start_server(media=root)
    digest = hashlib.sha256(data)
    async with http.get(f"{base}/files/one.bin", params={"hash": "sha256"}) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert await response.text() == digest.hexdigest() + "\n"
    async with http.get(f"{base}/files/one.bin") as response:
        assert response.status == 200
        expected = "sha-256=:" + base64.b64encode(digest.digest()).decode() + ":"
        assert response.headers["Repr-Digest"] == expected
        assert await response.read() == data
