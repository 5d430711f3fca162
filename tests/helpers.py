"""What the tests share: real servers (in this process or as a subprocess), real clients,
and waiting on conditions instead of sleeping.

``make_settings(**overrides)`` is what the ``start_server`` fixture runs (port 0);
``cli_server(...)`` runs ``python -m streamer`` as a subprocess, for what needs a
real process (signals, exit codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.fanout import Framing
from streamer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "media"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require(available: bool, what: str) -> None:
    """Skip when ``what`` is missing on a laptop; under ``CI=true`` fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} (CI=true: .ci/run must provide it)")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Path of an external tool, with :func:`require`'s skip-or-fail rule."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def non_loopback_address() -> str:
    """An IPv4 address of this machine that is not loopback (Linux: SIOCGIFADDR), to connect
    from as a client that is not local; :func:`require` when there is none."""
    import fcntl
    import ipaddress
    import struct

    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                packed = fcntl.ioctl(
                    probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15])
                )
            except OSError:
                continue
        address = socket.inet_ntoa(packed[20:24])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    require(False, "this machine has no non-loopback IPv4 address")
    raise AssertionError("unreachable")


async def wait_for(
    condition: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def assert_problem(
    response: aiohttp.ClientResponse, status: int, kind: str
) -> dict[str, Any]:
    """Check a problem+json answer (RFC 9457) and return its body."""
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.json(content_type=None)
    assert body["status"] == status
    assert body["type"].endswith("/" + kind)
    assert body["title"]
    assert body["detail"]
    assert response.headers["X-Request-ID"]
    problem: dict[str, Any] = body
    return problem


def make_settings(**overrides: Any) -> Settings:
    base = Settings(host="127.0.0.1", port=0, media=MEDIA, heartbeat=30.0)
    return dataclasses.replace(base, **overrides)


async def metric(http: aiohttp.ClientSession, server: str, name: str) -> int:
    """One value from the server's ``/metrics``."""
    async with http.get(f"{server}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def publish(
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    body: str | bytes = "",
    *,
    event: str | None = None,
    json_body: object = None,
) -> str:
    params = {"event": event} if event else {}
    if json_body is not None:
        request = http.post(f"{base}/events/{topic}", params=params, json=json_body)
    else:
        request = http.post(f"{base}/events/{topic}", params=params, data=body)
    async with request as response:
        assert response.status == 201, await response.text()
        reply = await response.json()
        assert reply["topic"] == topic
        event_id: str = reply["id"]
        return event_id


async def subscribers_are(http: aiohttp.ClientSession, base: str, count: int) -> bool:
    return await subscriber_count(http, base) == count


async def subscriber_count(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/healthz") as response:
        count: int = (await response.json())["subscribers"]
        return count


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def read_until(reader: asyncio.StreamReader, marker: bytes, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), timeout)


async def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def hang_up(writer: asyncio.StreamWriter) -> None:
    """Reset a raw connection and wait until it is closed: one whose reading is paused
    (a client that stopped reading) could outlive a plain ``close()`` and the event loop,
    whose own close then failed on uvloop (EBUSY, "unclosed resource")."""
    writer.transport.abort()
    await asyncio.wait_for(writer.wait_closed(), 5)


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


class CliServer:
    """A server subprocess; its output (from the "listening" line on) is collected in
    ``lines`` by a thread, unless ``collect`` is false (then nobody reads it)."""

    def __init__(
        self, process: subprocess.Popen[str], url: str, listening: str, collect: bool = True
    ) -> None:
        self.process = process
        self.url = url
        self.lines: list[str] = [listening]
        self.collector: threading.Thread | None = None
        if collect:
            self.collector = threading.Thread(target=self._collect, daemon=True)
            self.collector.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under it at the end
            for line in self.process.stdout:
                self.lines.append(line)


@contextlib.contextmanager
def cli_server(
    *args: str, env: dict[str, str] | None = None, collect: bool = True
) -> Iterator[CliServer]:
    """Run ``python -m streamer`` on a free port; yields once it is listening (its output
    read from then on only with ``collect``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamer", "serve", "--port", "0", "--media", str(MEDIA), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    server = None
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 20  # --workers: each worker is a fresh interpreter
        line = ""
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                url = match[1]
        assert url, "server did not start"
        server = CliServer(process, url, line, collect)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)  # --workers: they follow it (PDEATHSIG)
        process.wait(5)
        if server is not None and server.collector is not None:
            server.collector.join(5)  # until the workers' ends of the pipe close too
        if process.stdout:
            process.stdout.close()


def plain(data: bytes) -> bytes:
    return data


class RecordingSink:
    """A :class:`~streamer.fanout.Sink` that keeps what it is sent."""

    def __init__(self, topics: frozenset[str] | None, framing: Framing = plain) -> None:
        self.topics = topics
        self.framing = framing
        self.writes: list[bytes] = []
        self.arrived = asyncio.Event()  # set on every write

    def send(self, data: bytes) -> None:
        self.writes.append(data)
        self.arrived.set()


TCP_CLOSE = 7  # tcp_info.tcpi_state after a reset


def was_reset(writer: asyncio.StreamWriter) -> bool:
    """Has the server cut this connection? Read from the kernel, without reading the socket
    (reading would un-stall it): a reset leaves the socket in TCP_CLOSE."""
    if writer.transport.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return True
    return bool(state == TCP_CLOSE)
