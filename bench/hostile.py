"""Hardening benchmark (issue #10): hostile client shapes, each beside a normal client.

For each shape a fresh server (``streamer serve`` on 127.0.0.1, pinned to the
first CPU, a temporary media and logs folder, the budget flags given
explicitly: see ``BUDGET``) is started, then a *normal client* in its own
process (pinned to the second CPU, at normal priority; this script runs the
hostile load there at nice 10 so it yields to the normal client):

* a GET every 20 ms on a fixed schedule, alternately ``/healthz`` and
  ``/files/small.bin`` (4 KiB), each on a fresh connection, 2 s timeout
  (a timeout or an error counts as 2,000 ms in the p99);
* a publisher: 20 events/s to topic ``normal`` (``n=<seq> t=<time>``) and one
  SSE subscriber on that topic, which checks every seq: a publish answered 201
  that never arrives is lost, one that arrives twice is duplicated. When its
  stream is cut it reconnects with ``Last-Event-ID``; it also closes and
  resumes on purpose every 2 s (every 0.5 s in bad-publish), so every shape
  tests resume too; an ``event: reset`` is counted;
* a log writer appending a line every 50 ms to the shape's log, and one SSE
  tail of that log checked the same way (line latency, lost, duplicated).

After a warm-up the hostile shape runs for a bounded time (``--quick``:
shorter holds), while a thread samples the server's RSS, CPU time and open
fds from /proc every 50 ms (RSS peak: the larger of the samples and
``VmHWM``). Then every hostile socket is closed and *recover* is the time
until all of: the normal requests are back under 100 ms (10 in a row, none
older pending), RSS is back within 64 MiB of the warm-up or has stopped
moving (±2 MiB for 1 s), the server holds no more fds than at warm-up + 10,
and its CPU is within 0.3 core of the warm-up's; capped (then "-"). Last,
the normal client stops (waiting up to 3 s for what it published and wrote
to arrive), its streams stay open, the server gets SIGTERM and *shutdown*
is the time until it exits.

Shapes (``--shapes``, comma-separated):

1. ``replay-stall``: 640 events of 100 KB (64 MB of history) published to
   ``replay``, then 20 clients resume from the first id and never read.
2. ``pipeline-unread``: 4 connections each send ~1 MB of pipelined
   ``GET /files/small.bin`` and never read.
3. ``tail-hogs``: a log of 10,000 lines of 7 KB; 20 clients ``GET
   /logs/big.log?tail=10000`` and never read; the normal tail and writer
   are on that same log.
4. ``fanout-laggards``: 5,000 subscribers that never read (raw sockets), then
   20 events of 100 KB.
5. ``hash-heads``: six concurrent ``HEAD`` of fresh sparse 1 GiB files, then
   six ``GET`` of them left after 0.2 s (the old server hashed them all for
   ``Repr-Digest`` in the background), 2 rounds (1 with ``--quick``).
6. ``slowloris``: the server started with RLIMIT_NOFILE 1024 soft / 1200 hard;
   1,100 connections send half a request head, then one byte a second, for
   longer than ``--header-timeout``.
7. ``distinct-topics``: 10,000 subscribers each on its own topic, reading;
   then half closed, half reset (RST); shutdown after.
8. ``grep-needles``: 2,000 tails of one log each with its own ``?grep=``
   needle (reading), then 20,000 lines appended, one needle each; the normal
   tail and writer are on that log.
9. ``gzip-bombs``: rounds of four concurrent ``POST /events/x`` with
   ``Content-Encoding: gzip`` bodies of 199 KB that inflate to ~200 MB, no token.
10. ``bad-publish``: publishes to the normal topic, every 100 ms, of JSON with a
    lone surrogate (``{"a": "\\udc80"}``), 1,000 and 100,000 levels of nesting,
    and ``NaN``; the normal subscriber must lose nothing around them.

Targets (issue #10): RSS peak under ``--max-unsent`` + 200 MB, normal p99 under
100 ms, shutdown within ``--shutdown-timeout`` + 0.2 s, 0 lost and 0
duplicated events (SSE events and log lines), and a recovery within the cap.

``--before DIR`` runs the same command in an older checkout (e.g. a ``git
worktree``) beside the current code, shape by shape; flags it does not have
are left out. Prints a markdown table and writes JSON (and the server logs)
to bench/results/.

    python bench/hostile.py                         # every shape, ~3-4 minutes
    python bench/hostile.py --quick                 # every shape, ~90 s
    python bench/hostile.py --shapes slowloris,gzip-bombs --before DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from variants import before_tree, clean_env, git_commit, old_command  # bench/ is on sys.path

SELF = Path(__file__).resolve()
HERE = SELF.parent
ROOT = HERE.parent
RESULTS = HERE / "results"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
LISTENING = re.compile(r"listening on (http://[^\s)]+)")
HOST = "127.0.0.1"
MIB = 1 << 20

# The budget every server gets, as flags, so the report can state it.
BUDGET: dict[str, int | float] = {
    "max-buffer": 1 * MIB,
    "max-unsent": 256 * MIB,
    "send-timeout": 5,
    "header-timeout": 5,
    "idle-timeout": 30,
    "shutdown-timeout": 1,
    "max-body": 256 * 1024,  # room for 100 KB events and the 199 KB gzip bombs
    "history-bytes": 128 * MIB,  # the 64 MB of replay-stall fit, with the normal topic's
    "heartbeat": 15,
}
RSS_MARGIN = 200 * MIB
P99_TARGET_MS = 100.0
SHUTDOWN_MARGIN = 0.2

REQUEST_TIMEOUT = 2.0  # a normal request slower than this counts as failed (2,000 ms)
REQUEST_EVERY = 0.02
PUBLISH_EVERY = 0.05
WRITE_EVERY = 0.05
GOOD_IN_A_ROW = 10
NORMAL_SEQ = re.compile(rb"n=(\d+) t=([0-9.]+)")
BAD_BODIES: dict[str, bytes] = {
    "lone-surrogate": b'{"a": "\\udc80"}',
    "nested-1000": b"[" * 1000 + b"]" * 1000,
    "nested-100000": b"[" * 100_000 + b"]" * 100_000,
    "nan": b'{"a": NaN}',
}
CWD: dict[str, Path] = {}  # a variant's working directory when not ROOT
CHILDREN: set[asyncio.subprocess.Process] = set()  # killed on the way out, whatever happens


# -- small HTTP/1.1 client on raw streams --------------------------------------------------


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out)
        size = int(body[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 4 + size


async def http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (``Connection: close``): (status, headers, body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            data = await reader.read(-1)
        finally:
            writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    first, *fields = head.decode("latin-1").split("\r\n")
    parts = first.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError(f"no HTTP answer ({len(data)} bytes)")
    answer: dict[str, str] = {}
    for line in fields:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    if "chunked" in answer.get("transfer-encoding", ""):
        rest = _dechunk(rest)
    return int(parts[1]), answer, rest


async def publish(
    port: int, topic: str, body: bytes, content_type: str = "text/plain", timeout: float = 5.0
) -> tuple[int, str | None]:
    status, _, answer = await http(
        port, "POST", f"/events/{topic}", {"Content-Type": content_type}, body, timeout
    )
    event_id = None
    if status == 201:
        with contextlib.suppress(ValueError, AttributeError):
            event_id = str(json.loads(answer)["id"])
    return status, event_id


def sse_request(path: str, port: int, last_id: str | None = None) -> bytes:
    """An SSE request in HTTP/1.0: the stream then comes unchunked and ends with the socket."""
    resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
    return f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n{resume}\r\n".encode()


# -- the normal client (its own process: python bench/hostile.py --normal-client PORT) -----


@dataclass
class Checked:
    """One checked SSE subscription: which seqs arrived, how often, how late."""

    name: str
    path: str
    received: Counter[int] = field(default_factory=Counter)
    foreign: int = 0  # events that are not the normal client's (accepted bad publishes...)
    resets: int = 0  # event: reset / rotated / truncated: resume failed
    cuts: int = 0  # streams the server ended or broke
    resumes: int = 0  # reconnects on purpose, with Last-Event-ID
    errors: int = 0  # reconnects that failed
    last_id: str | None = None
    connected: bool = False
    resumed_from: str | None = None  # the Last-Event-ID of the current connection
    first_seen: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # the first few, to debug


class NormalClient:
    def __init__(self, port: int, log_path: Path, resume_every: float) -> None:
        self.port = port
        self.log_path = log_path
        self.resume_every = resume_every
        self.running = True  # requests, publishes and log lines go on
        self.reconnect = True  # streams reconnect (off once the summary is out)
        self.pending: dict[int, float] = {}  # request number -> start
        self.requests = 0
        self.failures: Counter[str] = Counter()  # why requests failed, over the whole run
        self.answered: dict[int, str] = {}  # publish seq -> id
        self.publish_failed: Counter[str] = Counter()
        self.publish_tasks: set[asyncio.Task[None]] = set()
        self.written = 0
        self.events = Checked("events", "/events?topic=normal")
        self.lines = Checked("log", f"/logs/{log_path.name}")
        self.ready = asyncio.Event()  # both streams open: what is sent from now on must arrive

    def emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def request(self, number: int) -> None:
        path = "/healthz" if number % 2 == 0 else "/files/small.bin"
        start = time.monotonic()
        self.pending[number] = start
        ok = False
        try:
            status, _, body = await http(self.port, "GET", path)
            ok = status == 200 and (path == "/healthz" or len(body) == 4096)
            if not ok:
                self.failures[f"{status}" if status != 200 else "short body"] += 1
        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
            self.failures[type(exc).__name__] += 1
        finally:
            del self.pending[number]
        ms = (time.monotonic() - start) * 1000
        oldest = min(self.pending.values(), default=None)
        self.emit({"k": "r", "t": start, "ms": ms, "ok": ok, "p": oldest})

    async def requesting(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while self.running:
            if len(tasks) < 200:  # bounded: 2 s timeout x 50/s is 100
                task = asyncio.create_task(self.request(self.requests))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.requests += 1
            next_at += REQUEST_EVERY
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def publish_one(self, seq: int) -> None:
        body = b"n=%d t=%.6f" % (seq, time.monotonic())
        try:
            status, event_id = await publish(self.port, "normal", body)
        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
            self.publish_failed[type(exc).__name__] += 1
            return
        if status == 201 and event_id is not None:
            self.answered[seq] = event_id
        else:
            self.publish_failed[str(status)] += 1

    async def publishing(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while self.running:
            task = asyncio.create_task(self.publish_one(seq))
            self.publish_tasks.add(task)
            task.add_done_callback(self.publish_tasks.discard)
            seq += 1
            next_at += PUBLISH_EVERY
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def writing(self) -> None:
        next_at = time.monotonic()
        while self.running:
            append(self.log_path, b"normal n=%d t=%.6f\n" % (self.written, time.monotonic()))
            self.written += 1
            next_at += WRITE_EVERY
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def on_block(self, checked: Checked, block: bytes) -> None:
        event_id = kind = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = line[4:].decode(errors="replace")
            elif line.startswith(b"event: "):
                kind = line[7:]
            elif line.startswith(b"data: "):
                data.append(line[6:])
        if kind in (b"reset", b"rotated", b"truncated"):
            checked.resets += 1
        if event_id is not None:
            checked.last_id = event_id
        if not data or kind in (b"reset", b"rotated", b"truncated"):
            return
        match = NORMAL_SEQ.search(b"\n".join(data))
        if match is None or (checked is self.lines and not data[0].startswith(b"normal ")):
            checked.foreign += 1
            return
        seq = int(match[1])
        checked.received[seq] += 1
        if checked.received[seq] > 1 and len(checked.duplicates) < 5:
            first_id, first_from = checked.first_seen.get(seq, (None, None))
            checked.duplicates.append(
                {
                    "seq": seq,
                    "ids": [first_id, event_id],
                    "resumed_from": [first_from, checked.resumed_from],
                }
            )
        if checked.received[seq] == 1:
            checked.first_seen[seq] = (event_id, checked.resumed_from)
            sent = float(match[2])
            self.emit({"k": checked.name[0], "t": sent, "ms": (time.monotonic() - sent) * 1000})

    async def follow(self, checked: Checked) -> None:
        """Keep one SSE stream open, resuming with Last-Event-ID after every cut."""
        while True:
            if not self.reconnect:
                await asyncio.sleep(3600)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, self.port, limit=1 << 22), REQUEST_TIMEOUT
                )
            except (OSError, TimeoutError):
                checked.errors += 1
                await asyncio.sleep(0.1)
                continue
            on_purpose = False
            try:
                checked.resumed_from = checked.last_id
                writer.write(sse_request(checked.path, self.port, checked.last_id))
                buffer = b""
                head_done = False
                until = time.monotonic() + self.resume_every
                while True:
                    left = until - time.monotonic()
                    if left <= 0 and self.reconnect and self.running:
                        on_purpose = True
                        break
                    try:
                        chunk = await asyncio.wait_for(reader.read(1 << 20), max(left, 0.05))
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    buffer += chunk
                    if not head_done:
                        head, sep, rest = buffer.partition(b"\r\n\r\n")
                        if not sep:
                            continue
                        if b" 200 " not in head.split(b"\r\n", 1)[0]:
                            checked.errors += 1
                            await asyncio.sleep(0.2)
                            break
                        head_done, buffer = True, rest
                    *blocks, buffer = buffer.split(b"\n\n")
                    for block in blocks:
                        self.on_block(checked, block)
                    if blocks and not checked.connected:  # ": connected": it is registered
                        checked.connected = True
                        if self.events.connected and self.lines.connected:
                            self.ready.set()
            except OSError:
                pass
            finally:
                writer.close()
            if on_purpose:
                checked.resumes += 1
            else:
                checked.cuts += 1
                await asyncio.sleep(0.05)

    def summary(self) -> dict[str, Any]:
        written = set(range(self.written))
        out: dict[str, Any] = {
            "k": "summary",
            "requests": self.requests,
            "request_failures": dict(self.failures),
            "published": len(self.answered),
            "publish_failed": dict(self.publish_failed),
            "log_lines_written": self.written,
        }
        for checked, expected in ((self.events, set(self.answered)), (self.lines, written)):
            got = checked.received
            out[checked.name] = {
                "received": len(got),
                "lost": len(expected - set(got)),
                "duplicated": sum(count - 1 for count in got.values()),
                "unconfirmed": len(set(got) - expected),  # publish timed out but delivered
                "foreign": checked.foreign,
                "resets": checked.resets,
                "cuts": checked.cuts,
                "resumes": checked.resumes,
                "reconnect_errors": checked.errors,
                "duplicate_examples": checked.duplicates,
            }
        return out

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        followers = [asyncio.create_task(self.follow(c)) for c in (self.events, self.lines)]
        await asyncio.wait_for(self.ready.wait(), 10)
        self.emit({"k": "ready"})
        workers = [
            asyncio.create_task(work()) for work in (self.requesting, self.publishing, self.writing)
        ]
        command = await stdin.readline()  # b"stop\n", or b"" when the parent is gone
        self.running = False
        await asyncio.wait(workers, timeout=REQUEST_TIMEOUT + 1)
        if self.publish_tasks:
            await asyncio.wait(list(self.publish_tasks), timeout=6)
        for _ in range(60):  # up to 3 s for the last events and lines to arrive
            if set(self.answered) <= set(self.events.received) and self.written <= len(
                self.lines.received
            ):
                break
            await asyncio.sleep(0.05)
        self.reconnect = False  # the server's shutdown may end the streams: no reconnects
        self.emit(self.summary())
        if command:
            await stdin.readline()  # b"exit\n" after the server is gone
        for task in followers + workers:
            task.cancel()
        await asyncio.gather(*followers, *workers, return_exceptions=True)


# -- the server and what watches it ---------------------------------------------------------


def read_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def append(path: Path, data: bytes) -> None:
    """One write with O_APPEND: lines from two writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_sparse(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        out.truncate(size)  # sparse: reads as zeros, hashes like any file of that size


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Sampler(threading.Thread):
    """RSS and CPU of the server every 50 ms, its open fds every 200 ms (a thread: the
    event loop of this script is busy opening thousands of sockets at times)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, float]] = []  # (time, RSS bytes, CPU s)
        self.fds: list[tuple[float, int]] = []
        self.hwm = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                status = read_status(self.pid)
                self.samples.append((now, status["VmRSS"], cpu_seconds(self.pid)))
                self.hwm = max(self.hwm, status.get("VmHWM", 0))
                if count % 4 == 0:
                    self.fds.append((now, len(os.listdir(f"/proc/{self.pid}/fd"))))
            except (OSError, KeyError, IndexError, ValueError):
                return  # the process is gone
            count += 1
            self.stopping.wait(0.05)


def cpus() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def child_setup(cpu: int | None, nofile: tuple[int, int] | None = None) -> Callable[[], None]:
    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(OSError):  # back to nice 0 from this script's 10 (root only)
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return setup


def server_command(variant: str, media: Path, logs: Path) -> tuple[list[str], list[str]]:
    command = [
        PYTHON, "-m", "streamer", "serve", "--host", HOST, "--port", "0",
        "--media", str(media), "--logs", str(logs), "--log-level", "info",
    ]  # fmt: skip
    for flag, value in BUDGET.items():
        command += [f"--{flag}", str(value)]
    if variant == "streamer-before":
        return old_command(command, CWD[variant])
    return command, []


async def start_server(
    variant: str, media: Path, logs: Path, log: Path, nofile: tuple[int, int] | None
) -> tuple[asyncio.subprocess.Process, int, list[str], list[str]]:
    command, dropped = server_command(variant, media, logs)
    with log.open("wb") as output:  # a file, not a pipe: no reader competing for CPU
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            cwd=CWD.get(variant, ROOT),
            env=clean_env(),
            preexec_fn=child_setup(cpus()[0], nofile),
        )
    CHILDREN.add(process)
    deadline = time.monotonic() + 20
    while True:
        text = read_text(log)
        match = LISTENING.search(text)
        if match is not None:
            return process, int(match[1].rsplit(":", 1)[1]), command, dropped
        if process.returncode is not None or time.monotonic() > deadline:
            tail = text.strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"{variant} did not start: {tail[0][:200]}")
        await asyncio.sleep(0.05)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
    CHILDREN.discard(process)


class Normal:
    """The normal client process, seen from here: its samples as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.requests: list[tuple[float, float, bool]] = []  # (start, ms, ok)
        self.events: list[tuple[float, float]] = []  # (published, ms)
        self.lines: list[tuple[float, float]] = []  # (written, ms)
        self.oldest_pending: float | None = None
        self.ready = asyncio.Event()
        self.summary: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            record = json.loads(line)
            kind = record["k"]
            if kind == "r":
                self.requests.append((record["t"], record["ms"], record["ok"]))
                self.oldest_pending = record["p"]
            elif kind == "e":
                self.events.append((record["t"], record["ms"]))
            elif kind == "l":
                self.lines.append((record["t"], record["ms"]))
            elif kind == "ready":
                self.ready.set()
            elif kind == "summary" and not self.summary.done():
                self.summary.set_result(record)
        if not self.summary.done():
            self.summary.set_exception(RuntimeError("the normal client ended without a summary"))

    async def send(self, command: bytes) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(command)
            await self.process.stdin.drain()


async def start_normal(port: int, log_path: Path, resume_every: float) -> Normal:
    command = [
        PYTHON, str(SELF), "--normal-client", str(port),
        "--normal-log", str(log_path), "--resume-every", str(resume_every),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        limit=1 << 20,
        preexec_fn=child_setup(cpus()[1]),
    )
    CHILDREN.add(process)
    normal = Normal(process)
    try:
        await asyncio.wait_for(normal.ready.wait(), 15)
    except TimeoutError:
        raise RuntimeError("the normal client did not get its two streams") from None
    return normal


# -- hostile load ---------------------------------------------------------------------------


@dataclass
class Plan:
    warmup: float
    hold: float  # seconds of hostile load after its setup
    slow_hold: float  # slowloris: longer than --header-timeout
    recover_cap: float
    hash_rounds: int


FULL = Plan(warmup=1.0, hold=4.0, slow_hold=8.0, recover_cap=10.0, hash_rounds=2)
QUICK = Plan(warmup=0.6, hold=2.0, slow_hold=6.0, recover_cap=4.0, hash_rounds=1)


class Sink(asyncio.Protocol):
    """A reading client that drops what it reads (counting its answer's status, and ``id:``
    lines roughly)."""

    def __init__(self, request: bytes, counts: Counter[str]) -> None:
        self.request = request
        self.counts = counts
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            first = data.split(b"\r\n", 1)[0].split(b" ")
            self.counts[
                f"status {first[1].decode(errors='replace') if len(first) > 1 else '?'}"
            ] += 1
        self.counts["bytes"] += len(data)
        self.counts["ids"] += data.count(b"\nid: ") + data.startswith(b"id: ")

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["closed"] += 1


@dataclass
class Ctx:
    """What a shape gets: the server, a bounded time, and registries closed at the end."""

    port: int
    media: Path
    logs: Path
    plan: Plan
    sockets: list[socket.socket] = field(default_factory=list)
    transports: list[asyncio.Transport] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    reset_half: bool = False  # close half the reading transports with an RST

    async def raw(self, request: bytes) -> socket.socket:
        """A connection that sends ``request`` and never reads."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer, as a remote attacker's would cost this machine nothing:
        # on loopback the attacker's kernel is ours, and 5,000 receive buffers autotuned
        # to 32 MB (tcp_rmem) pass tcp_mem, which stalls every TCP socket of the machine.
        # What the server can bound, its own send side, stays the same.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        self.sockets.append(sock)
        async with asyncio.timeout(5):
            await loop.sock_connect(sock, (HOST, self.port))
            if request:
                await loop.sock_sendall(sock, request)
        return sock

    async def reading(self, request: bytes, counts: Counter[str]) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            transport, _ = await loop.create_connection(
                lambda: Sink(request, counts), HOST, self.port
            )
        assert isinstance(transport, asyncio.Transport)
        self.transports.append(transport)

    async def many(self, count: int, open_one: Callable[[int], Awaitable[Any]]) -> int:
        """Open ``count`` connections, 250 at a time; how many failed."""
        failed = 0
        for start in range(0, count, 250):
            done = await asyncio.gather(
                *(open_one(i) for i in range(start, min(count, start + 250))),
                return_exceptions=True,
            )
            failed += sum(isinstance(result, BaseException) for result in done)
        return failed

    def background(self, work: Awaitable[Any]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for sock in self.sockets:
            sock.close()  # unread data in its buffer: the kernel sends an RST
        for index, transport in enumerate(self.transports):
            if self.reset_half and index % 2:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            else:
                transport.close()
        self.sockets.clear()
        self.transports.clear()
        await asyncio.sleep(0)


async def replay_stall(ctx: Ctx) -> None:
    ids: list[str | None] = []
    statuses: Counter[int] = Counter()
    for start in range(0, 640, 4):
        done = await asyncio.gather(
            *(
                publish(ctx.port, "replay", b"%06d " % i + b"r" * 99_993)
                for i in range(start, start + 4)
            ),
            return_exceptions=True,
        )
        for result in done:
            if isinstance(result, BaseException):
                statuses[-1] += 1
            else:
                statuses[result[0]] += 1
                ids.append(result[1])
    first = next((event_id for event_id in ids if event_id), None)
    ctx.notes["publish statuses"] = dict(statuses)
    if first is None:
        raise RuntimeError(f"no 100 KB publish was accepted: {dict(statuses)}")
    request = sse_request("/events?topic=replay", ctx.port, first)
    ctx.notes["stalled failed"] = await ctx.many(20, lambda _: ctx.raw(request))
    await asyncio.sleep(ctx.plan.hold)


async def pipeline_unread(ctx: Ctx) -> None:
    one = f"GET /files/small.bin HTTP/1.1\r\nHost: {HOST}:{ctx.port}\r\n\r\n".encode()
    payload = one * (MIB // len(one))
    sent: Counter[int] = Counter()
    loop = asyncio.get_running_loop()

    async def push(index: int) -> None:
        sock = await ctx.raw(b"")
        for start in range(0, len(payload), 1 << 16):  # counted by the 64 KiB the kernel took
            await loop.sock_sendall(sock, payload[start : start + (1 << 16)])
            sent[index] += len(payload[start : start + (1 << 16)])

    for index in range(4):
        ctx.background(push(index))
    await asyncio.sleep(ctx.plan.hold)
    ctx.notes["request bytes taken by the server's socket"] = sum(sent.values())
    ctx.notes["pipelined requests sent"] = sum(sent.values()) // len(one)


def make_big_log(logs: Path) -> None:
    with open(logs / "big.log", "wb") as log:
        for i in range(10_000):
            log.write(b"hog %05d " % i + b"h" * 6990 + b"\n")


async def tail_hogs(ctx: Ctx) -> None:
    request = sse_request("/logs/big.log?tail=10000", ctx.port)
    ctx.notes["hogs failed"] = await ctx.many(20, lambda _: ctx.raw(request))
    await asyncio.sleep(ctx.plan.hold)


async def fanout_laggards(ctx: Ctx) -> None:
    request = sse_request("/events?topic=lag", ctx.port)
    ctx.notes["laggards failed"] = await ctx.many(5000, lambda _: ctx.raw(request))
    statuses: Counter[int | str] = Counter()
    for i in range(20):
        try:
            status, _ = await publish(ctx.port, "lag", b"%02d " % i + b"l" * 99_997, timeout=10)
            statuses[status] += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            statuses[type(exc).__name__] += 1
    ctx.notes["publish statuses"] = dict(statuses)
    await asyncio.sleep(ctx.plan.hold)


async def hash_heads(ctx: Ctx) -> None:
    results: Counter[str] = Counter()
    latencies: list[float] = []
    end = time.monotonic() + ctx.plan.hold
    for rounds in range(ctx.plan.hash_rounds):
        names = [f"big-{rounds}-{i}.bin" for i in range(6)]
        for name in names:
            make_sparse(ctx.media / name, 1 << 30)

        async def head(name: str) -> None:
            start = time.monotonic()
            try:
                status, headers, _ = await http(ctx.port, "HEAD", f"/files/{name}", timeout=10)
                results[f"{status}{' +digest' if 'repr-digest' in headers else ''}"] += 1
            except (OSError, TimeoutError, ConnectionError) as exc:
                results[type(exc).__name__] += 1
            latencies.append(time.monotonic() - start)

        async def get_and_leave(name: str) -> None:
            try:
                _, writer = await asyncio.open_connection(HOST, ctx.port)
            except OSError as exc:
                results[f"GET {type(exc).__name__}"] += 1
                return
            writer.write(f"GET /files/{name} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await asyncio.sleep(0.2)  # the download has begun, and with it a hash
            writer.close()
            results["GET left"] += 1

        await asyncio.gather(*(head(name) for name in names))
        await asyncio.gather(*(get_and_leave(name) for name in names))
        await asyncio.sleep(max(0.0, (end - time.monotonic()) / (ctx.plan.hash_rounds - rounds)))
    ctx.notes["HEAD answers"] = dict(results)
    ctx.notes["slowest HEAD s"] = round(max(latencies), 3)


async def slowloris(ctx: Ctx) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{ctx.port}\r\nX-Slow: ".encode()
    ctx.notes["connects failed"] = await ctx.many(1100, lambda _: ctx.raw(head))
    alive = [sock for sock in ctx.sockets if sock.fileno() >= 0]
    began = time.monotonic()
    end = began + ctx.plan.slow_hold
    cut = 0
    cut_at: list[float] = []
    while time.monotonic() < end:
        await asyncio.sleep(1)
        still = []
        for sock in alive:
            try:
                sock.send(b"a")
                still.append(sock)
            except (BlockingIOError, InterruptedError):
                still.append(sock)
            except OSError:
                cut += 1
                cut_at.append(time.monotonic() - began)
        alive = still
    ctx.notes["cut by the server while trickling"] = cut
    ctx.notes["still open at the end"] = len(alive)
    if cut_at:
        ctx.notes["cuts seen after s (first-last)"] = f"{cut_at[0]:.1f}-{cut_at[-1]:.1f}"


def statuses(counts: Counter[str]) -> dict[str, int]:
    return {key.split()[1]: n for key, n in sorted(counts.items()) if key.startswith("status ")}


async def distinct_topics(ctx: Ctx) -> None:
    counts: Counter[str] = Counter()
    ctx.notes["connects failed"] = await ctx.many(
        10_000, lambda i: ctx.reading(sse_request(f"/events?topic=d{i}", ctx.port), counts)
    )
    await asyncio.sleep(ctx.plan.hold / 2)
    ctx.notes["closed by the server while held"] = counts["closed"]
    ctx.notes["answers"] = statuses(counts)
    ctx.reset_half = True  # the end of the shape: half close, half RST


async def grep_needles(ctx: Ctx) -> None:
    counts: Counter[str] = Counter()
    ctx.notes["connects failed"] = await ctx.many(
        2000,
        lambda i: ctx.reading(sse_request(f"/logs/needles.log?grep=k{i:04d}z", ctx.port), counts),
    )
    for batch in range(20):
        lines = (
            b"line %05d k%04dz %s\n" % (j, j % 2000, b"g" * 60)
            for j in range(batch * 1000, batch * 1000 + 1000)
        )
        append(ctx.logs / "needles.log", b"".join(lines))
        await asyncio.sleep(0.1)
    await asyncio.sleep(max(0.0, ctx.plan.hold - 2))
    ctx.notes["needle lines delivered (of 20,000)"] = counts["ids"]
    ctx.notes["closed by the server"] = counts["closed"]
    ctx.notes["answers"] = statuses(counts)


def gzip_bomb() -> bytes:
    """~199 KB of gzip that inflates to ~200 MB of zeros (made once)."""
    if not BOMB:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MIB)
        parts = [packer.compress(zeros) for _ in range(195)]  # ~1,020 bytes per MiB
        parts.append(packer.flush())
        BOMB.append(b"".join(parts))
    return BOMB[0]


BOMB: list[bytes] = []


async def gzip_bombs(ctx: Ctx) -> None:
    bomb = gzip_bomb()
    ctx.notes["bomb bytes"] = len(bomb)
    answers: Counter[str] = Counter()
    headers = {"Content-Type": "text/plain", "Content-Encoding": "gzip"}

    async def one() -> None:
        try:
            status, _, _ = await http(ctx.port, "POST", "/events/x", headers, bomb, timeout=10)
            answers[str(status)] += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            answers[type(exc).__name__] += 1

    end = time.monotonic() + ctx.plan.hold
    rounds = 0
    while time.monotonic() < end:
        await asyncio.gather(*(one() for _ in range(4)))
        rounds += 1
        await asyncio.sleep(0.2)
    ctx.notes["rounds of 4"] = rounds
    ctx.notes["answers"] = dict(answers)


async def bad_publish(ctx: Ctx) -> None:
    answers: dict[str, Counter[str]] = {name: Counter() for name in BAD_BODIES}
    end = time.monotonic() + ctx.plan.hold
    count = 0
    while time.monotonic() < end:
        name = list(BAD_BODIES)[count % len(BAD_BODIES)]
        try:
            status, _ = await publish(ctx.port, "normal", BAD_BODIES[name], "application/json")
            answers[name][str(status)] += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            answers[name][type(exc).__name__] += 1
        count += 1
        await asyncio.sleep(0.1)
    ctx.notes["answers"] = {name: dict(counts) for name, counts in answers.items()}


@dataclass(frozen=True)
class Shape:
    run: Callable[[Ctx], Awaitable[None]]
    log: str = "normal.log"  # the log the normal client writes and tails
    prepare: Callable[[Path, Path], None] | None = None  # (media, logs), before the server
    nofile: tuple[int, int] | None = None
    resume_every: float = 2.0


SHAPES: dict[str, Shape] = {
    "replay-stall": Shape(replay_stall),
    "pipeline-unread": Shape(pipeline_unread),
    "tail-hogs": Shape(tail_hogs, log="big.log", prepare=lambda _, logs: make_big_log(logs)),
    "fanout-laggards": Shape(fanout_laggards),
    "hash-heads": Shape(hash_heads),
    "slowloris": Shape(slowloris, nofile=(1024, 1200)),
    "distinct-topics": Shape(distinct_topics),
    "grep-needles": Shape(grep_needles, log="needles.log"),
    "gzip-bombs": Shape(gzip_bombs),
    "bad-publish": Shape(bad_publish, resume_every=0.5),
}


# -- one shape, measured --------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def request_ms(ms: float, ok: bool) -> float:
    return ms if ok else max(ms, REQUEST_TIMEOUT * 1000)


def settled_from(points: list[tuple[float, float]], ok: Callable[[float], bool]) -> float | None:
    """The first time from which every later point is ok (None: the last one is not)."""
    since = None
    for when, value in points:
        if not ok(value):
            since = None
        elif since is None:
            since = when
    return since


@dataclass
class Recovery:
    """When each recovery criterion started to hold for good, and whether that is sure."""

    t_stop: float
    base_rss: int
    base_fds: int
    base_cpu: float  # cores

    def latency(self, normal: Normal) -> tuple[float | None, bool]:
        after = sorted(r for r in normal.requests if r[0] >= self.t_stop)
        good = [r[1] < P99_TARGET_MS and r[2] for r in after]
        since = settled_from([(r[0], float(g)) for r, g in zip(after, good, strict=True)], bool)
        if since is None:
            return None, False
        run = sum(1 for r in after if r[0] >= since)
        pending = normal.oldest_pending
        sure = run >= GOOD_IN_A_ROW and (pending is None or pending >= since)
        return (self.t_stop if since == after[0][0] else since), sure

    def rss(self, sampler: Sampler) -> tuple[float | None, bool]:
        after = [(t, float(rss)) for t, rss, _ in sampler.samples if t >= self.t_stop]
        if not after:
            return None, False
        below = settled_from(after, lambda rss: rss <= self.base_rss + 64 * MIB)
        if below is not None:
            return (self.t_stop if below == after[0][0] else below), True
        last = after[-1][1]
        steady = settled_from(after, lambda rss: abs(rss - last) <= 2 * MIB)
        return steady, steady is not None and after[-1][0] - steady >= 1.0

    def fds(self, sampler: Sampler) -> tuple[float | None, bool]:
        after = [(t, float(n)) for t, n in sampler.fds if t >= self.t_stop]
        since = settled_from(after, lambda n: n <= self.base_fds + 10)
        if since is not None and since == after[0][0]:
            since = self.t_stop
        return since, since is not None

    def cpu(self, sampler: Sampler) -> tuple[float | None, bool]:
        points = [(t, cpu) for t, _, cpu in sampler.samples if t >= self.t_stop]
        rates: list[tuple[float, float]] = []
        start = 0
        for end in range(1, len(points)):
            span = points[end][0] - points[start][0]
            if span >= 0.25:
                rates.append((points[start][0], (points[end][1] - points[start][1]) / span))
                start = end
        since = settled_from(rates, lambda rate: rate <= self.base_cpu + 0.3)
        if since is None:
            return None, False
        if since == rates[0][0]:
            since = self.t_stop
        return since, points[-1][0] - since >= 0.5

    def check(self, normal: Normal, sampler: Sampler) -> tuple[float | None, list[str]]:
        """(seconds to recover, or None; the criteria not yet met for sure)."""
        found = {
            "latency": self.latency(normal),
            "rss": self.rss(sampler),
            "fds": self.fds(sampler),
            "cpu": self.cpu(sampler),
        }
        waiting = [name for name, (since, sure) in found.items() if since is None or not sure]
        if waiting:
            return None, waiting
        return max(since for since, _ in found.values() if since is not None) - self.t_stop, []


def cpu_rate(sampler: Sampler, since: float) -> float:
    points = [(t, cpu) for t, _, cpu in sampler.samples if t >= since]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return 0.0
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


async def measure(name: str, variant: str, plan: Plan, work: Path, stamp: str) -> dict[str, Any]:
    shape = SHAPES[name]
    media, logs = work / "media", work / "logs"
    media.mkdir()
    logs.mkdir()
    (media / "small.bin").write_bytes(os.urandom(4096))
    (logs / shape.log).touch()
    if shape.prepare is not None:
        shape.prepare(media, logs)
    server_log = RESULTS / f"hostile-{stamp}-{name}-{variant}.log"
    result: dict[str, Any] = {"shape": name, "server": variant}
    process, port, command, dropped = await start_server(
        variant, media, logs, server_log, shape.nofile
    )
    result.update(command=command, dropped_flags=dropped, server_log=str(server_log))
    sampler = Sampler(process.pid)
    sampler.start()
    normal: Normal | None = None
    ctx = Ctx(port, media, logs, plan)
    try:
        normal = await start_normal(port, logs / shape.log, shape.resume_every)
        warm = time.monotonic()
        await asyncio.sleep(plan.warmup)
        base_rss = sampler.samples[-1][1]
        base_fds = sampler.fds[-1][1]
        base_cpu = cpu_rate(sampler, warm)
        t_start = time.monotonic()
        cpu_start = cpu_seconds(process.pid), cpu_seconds(normal.process.pid)
        try:
            await asyncio.wait_for(shape.run(ctx), plan.slow_hold + plan.hold + 60)
        except Exception as exc:  # the measurement goes on: a shape that fails is a finding
            ctx.notes["shape error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            await ctx.close()
        t_stop = time.monotonic()
        span = max(t_stop - t_start, 1e-3)
        busy = [cpu_seconds(process.pid), cpu_seconds(normal.process.pid)]
        ctx.notes["CPU during, server/normal client"] = "/".join(
            f"{100 * (after - before) / span:.0f}%"
            for after, before in zip(busy, cpu_start, strict=True)
        )
        recovery = Recovery(t_stop, base_rss, base_fds, base_cpu)
        recover_s, waiting = recovery.check(normal, sampler)
        while recover_s is None and time.monotonic() - t_stop < plan.recover_cap:
            await asyncio.sleep(0.1)
            recover_s, waiting = recovery.check(normal, sampler)
        await normal.send(b"stop\n")
        summary = await asyncio.wait_for(normal.summary, 20)
        hwm = max(sampler.hwm, max((s[1] for s in sampler.samples), default=0))
        rss_after = sampler.samples[-1][1]
        fds_peak = max((n for _, n in sampler.fds), default=0)
        cpu_hostile = cpu_seconds(process.pid)
        # shutdown: SIGTERM, with the normal client's two streams still open
        process.terminate()
        t_term = time.monotonic()
        timeout = float(BUDGET["shutdown-timeout"])
        try:
            await asyncio.wait_for(process.wait(), timeout + 10)
            shutdown_s: float | None = time.monotonic() - t_term
        except TimeoutError:
            shutdown_s = None
        sampler.stopping.set()
        during = [
            request_ms(ms, ok) for start, ms, ok in normal.requests if t_start <= start <= t_stop
        ]
        result.update(
            seconds=round(t_stop - t_start, 2),
            base_rss_mb=round(base_rss / MIB, 1),
            rss_peak_mb=round(hwm / MIB, 1),
            rss_after_mb=round(rss_after / MIB, 1),
            fds_base=base_fds,
            fds_peak=fds_peak,
            server_cpu_s=round(cpu_hostile, 2),
            requests_during=len(during),
            request_errors=sum(
                not ok for start, _, ok in normal.requests if t_start <= start <= t_stop
            ),
            p50_ms=percentile(during, 50),
            p99_ms=percentile(during, 99),
            max_ms=max(during, default=None),
            event_p99_ms=percentile([ms for t, ms in normal.events if t_start <= t <= t_stop], 99),
            line_p99_ms=percentile([ms for t, ms in normal.lines if t_start <= t <= t_stop], 99),
            recover_s=None if recover_s is None else round(recover_s, 2),
            not_recovered=waiting,
            shutdown_s=None if shutdown_s is None else round(shutdown_s, 3),
            exit_code=process.returncode,
            normal=summary,
            notes=ctx.notes,
        )
    finally:
        sampler.stopping.set()
        await ctx.close()
        await stop(process)
        if normal is not None:
            await normal.send(b"exit\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(normal.process.wait(), 5)
            await stop(normal.process)
            normal.reader.cancel()
    result["verdict"] = verdict(result)
    return result


def verdict(r: dict[str, Any]) -> list[str]:
    """What failed against the targets (empty: pass)."""
    failed = []
    if r["rss_peak_mb"] * MIB > int(BUDGET["max-unsent"]) + RSS_MARGIN:
        failed.append("rss")
    if r["p99_ms"] is None or r["p99_ms"] >= P99_TARGET_MS:
        failed.append("p99")
    if r["shutdown_s"] is None or r["shutdown_s"] > float(BUDGET["shutdown-timeout"]) + (
        SHUTDOWN_MARGIN
    ):
        failed.append("shutdown")
    normal = r["normal"]
    if normal["events"]["lost"] or normal["log"]["lost"]:
        failed.append("lost")
    if normal["events"]["duplicated"] or normal["log"]["duplicated"]:
        failed.append("dup")
    if r["recover_s"] is None:
        failed.append("recover")
    return failed


# -- report -----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| shape | server | RSS peak MB | normal p99 ms (max) | failed reqs | event / line p99 ms "
        "| recover s | shutdown s | lost/dup events | lost/dup lines | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if "error" in r:
            rows.append(f"| {r['shape']} | {r['server']} | error: {r['error'][:100]} |" + " |" * 8)
            continue
        ev, ln = r["normal"]["events"], r["normal"]["log"]
        recover = fmt(r["recover_s"], 2)
        if r["recover_s"] is None:
            recover = f"> cap ({', '.join(r['not_recovered'])})"
        result = "PASS" if not r["verdict"] else "FAIL: " + ", ".join(r["verdict"])
        rows.append(
            f"| {r['shape']} | {r['server']} | {fmt(r['rss_peak_mb'])} "
            f"| {fmt(r['p99_ms'])} ({fmt(r['max_ms'], 0)}) "
            f"| {r['request_errors']}/{r['requests_during']} "
            f"| {fmt(r['event_p99_ms'])} / {fmt(r['line_p99_ms'])} | {recover} "
            f"| {fmt(r['shutdown_s'], 2)} | {ev['lost']}/{ev['duplicated']} "
            f"| {ln['lost']}/{ln['duplicated']} | {result} |"
        )
    notes = []
    for r in runs:
        if "error" in r:
            continue
        ev, ln = r["normal"]["events"], r["normal"]["log"]
        extra = {
            "RSS warm/after MB": f"{r['base_rss_mb']}/{r['rss_after_mb']}",
            "fds warm/peak": f"{r['fds_base']}/{r['fds_peak']}",
            "hostile s": r["seconds"],
            "events cuts/resumes/resets/foreign": (
                f"{ev['cuts']}/{ev['resumes']}/{ev['resets']}/{ev['foreign']}"
            ),
            "line cuts/resets": f"{ln['cuts']}/{ln['resets']}",
            **r["notes"],
        }
        if r["normal"]["request_failures"]:
            extra["normal requests failed (whole run)"] = r["normal"]["request_failures"]
        if r["normal"]["publish_failed"]:
            extra["normal publishes failed"] = r["normal"]["publish_failed"]
        if r["dropped_flags"]:
            extra["flags left out"] = " ".join(r["dropped_flags"])
        if r["exit_code"]:
            extra["exit code"] = r["exit_code"]
        text = "; ".join(f"{key}: {value}" for key, value in extra.items())
        notes.append(f"- {r['shape']} / {r['server']}: {text}")
    return "\n".join([*rows, "", *notes])


# -- main -------------------------------------------------------------------------------------


def raise_own_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < 12_000:
        print(f"warning: open-file limit {soft}: distinct-topics needs ~10,100", file=sys.stderr)


async def run_all(args: argparse.Namespace, shapes: list[str], variants: list[str]) -> None:
    plan = QUICK if args.quick else FULL
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill: cancel, clean up, exit
        loop.add_signal_handler(sig, main_task.cancel)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"hostile-{stamp}.json"
    report: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": shlex.join(sys.orig_argv),
            **git_commit(ROOT),
            "before": {"dir": str(CWD["streamer-before"]), **git_commit(CWD["streamer-before"])}
            if "streamer-before" in CWD
            else None,
            "budget": BUDGET,
            "plan": vars(plan),
            "cpus": {"server": cpus()[0], "clients": cpus()[1]},
        },
        "runs": [],
    }
    runs: list[dict[str, Any]] = report["runs"]
    began = time.monotonic()
    for name in shapes:
        for variant in variants:
            print(f"{name} / {variant} ...", end=" ", flush=True)
            work = Path(tempfile.mkdtemp(prefix=f"hostile-{name}-"))
            try:
                result = await measure(name, variant, plan, work, stamp)
                print(
                    f"p99 {fmt(result['p99_ms'])} ms, RSS {fmt(result['rss_peak_mb'])} MB, "
                    f"recover {fmt(result['recover_s'], 2)} s, "
                    f"shutdown {fmt(result['shutdown_s'], 2)} s: "
                    + ("PASS" if not result["verdict"] else "FAIL " + ",".join(result["verdict"])),
                    flush=True,
                )
            except Exception as exc:  # one shape failing to run is reported, the rest go on
                print(f"failed: {type(exc).__name__}: {exc}", flush=True)
                result = {"shape": name, "server": variant, "error": f"{exc}"}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            runs.append(result)
            out.write_text(json.dumps(report, indent=2))  # partial results survive a crash
    commands = {r["server"]: r["command"] for r in runs if "command" in r}
    print(f"\ncommand: {shlex.join(sys.orig_argv)}")
    for variant, command in commands.items():
        where = CWD.get(variant, ROOT)
        print(f"server ({variant}, in {where}): {shlex.join(command)}")
    print(
        f"targets: RSS peak < --max-unsent + 200 MB = "
        f"{(int(BUDGET['max-unsent']) + RSS_MARGIN) / MIB:.0f} MB; normal p99 < "
        f"{P99_TARGET_MS:.0f} ms; shutdown <= --shutdown-timeout + {SHUTDOWN_MARGIN} s = "
        f"{float(BUDGET['shutdown-timeout']) + SHUTDOWN_MARGIN:.1f} s; 0 lost, 0 duplicated; "
        f"recovered within {plan.recover_cap:g} s ({time.monotonic() - began:.0f} s in all)\n"
    )
    print(table(runs))
    print(f"\nraw results: {out.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated, from: {', '.join(SHAPES)} (default: all)",
    )
    parser.add_argument("--before", metavar="DIR", help="an older checkout, run beside this one")
    parser.add_argument("--quick", action="store_true", help="shorter holds: ~90 s in all")
    parser.add_argument("--normal-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--normal-log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--resume-every", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.normal_client is not None:
        client = NormalClient(args.normal_client, args.normal_log, args.resume_every)
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            asyncio.run(client.run())
        return
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    variants = ["streamer"]
    if args.before:
        CWD["streamer-before"] = before_tree(args.before)
        variants.append("streamer-before")
    raise_own_fd_limit()
    client_cpu = cpus()[1]
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 10)  # the hostile load yields to the normal client
    try:
        asyncio.run(run_all(args, shapes, variants))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: servers, clients and sockets closed", file=sys.stderr)
        sys.exit(130)
    finally:
        for child in CHILDREN:  # what a failure or Ctrl-C left behind
            if child.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
