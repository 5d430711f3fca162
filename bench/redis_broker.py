"""The Redis broker beside the memory broker (issue 12): publish latency, and what an outage
of Redis costs.

**latency**: for each variant (``memory``, ``redis``: one process on ``--broker
redis://``, ``redis-2w``: ``--workers 2``), a server with one subscriber (with two
workers: one on each, found through ``/proc``), then ``--publishes`` ``POST
/events/lat`` one after the other over one keep-alive connection, each waiting for
its answer and for every subscriber to have the event before the next. Reports the
publish time (request written to answer read) and publish-to-receive time, p50 /
p99 / max; with two workers, receive times split by whether the subscriber is on the
publisher's worker.

**outage**: a redis-server with ``appendonly yes`` (its data survives a restart), the
server on it (``redis``, ``redis-2w``), a subscriber (one per worker) and a publisher
at ``--rate`` events/s, open loop: each publish on a free connection of a pool, so a
slow answer never holds the next back. After ``--warmup`` s redis-server is stopped
with SIGTERM (a real outage: its connections are gone, and it writes its append-only
file as it exits), kept down ``--down`` s, started again on the same port and data
directory, and publishing goes on ``--after`` s more. Reports what the publishes sent
during the outage were answered (503 count, their answer time p50/p99/max,
Retry-After), the time from redis answering PING again to the first 2xx publish and to
the first event each subscriber got, and, over every publish answered 2xx, whether
each subscriber got it exactly once (lost, duplicated; events delivered though their
publish was not answered 2xx are counted apart), with the resets and reconnects seen.

The server (all its processes) and redis-server are pinned to the first CPU, this
client to the second; with two workers the server and redis are not pinned (the
output says so). Every server and redis-server is this script's own, on loopback; the
results go to bench/results/redis_broker-<timestamp>.json, the logs beside it.

    python bench/redis_broker.py                                   # both parts, ~2 minutes
    python bench/redis_broker.py --parts latency --publishes 5000
    python bench/redis_broker.py --parts outage --variants redis --down 10 --rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from fanout import STREAMER, server  # bench/ is on sys.path
from fanout import fmt as fanout_fmt
from variants import RedisServer, git_commit, process_tree, redis_command, set_affinity

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
REDIS = ["--broker", "{redis_url}", "--redis-prefix", "{redis_prefix}"]
VARIANTS: dict[str, list[str]] = {
    "memory": [],
    "redis": REDIS,
    "redis-2w": [*REDIS, "--workers", "2"],
}
ID_LINE = re.compile(r"^(\d+)-(\d+)$")
ALLOWED = sorted(os.sched_getaffinity(0))  # before this script pins itself


def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def percentiles(values_ns: list[int]) -> dict[str, float | int | None]:
    if not values_ns:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    values = sorted(values_ns)

    def at(q: float) -> float:
        return ms(values[min(len(values) - 1, int(q * len(values)))])

    return {"n": len(values), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ms(values[-1])}


# -- where a connection landed -------------------------------------------------------------


def worker_of(server_pid: int, server_port: int, client_port: int) -> int | None:
    """The pid of the server process holding the accepted end of the loopback connection
    from ``client_port``: with ``SO_REUSEPORT`` the kernel picks the worker."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.rsplit(":", 1)[1], 16) == server_port
            and int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in process_tree(server_pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


# -- an SSE subscriber ------------------------------------------------------------------------


class SseProtocol(asyncio.Protocol):
    """``GET /events?topic=T``: decodes the chunked body and hands each event on."""

    def __init__(self, subscriber: Subscriber, last_id: str | None) -> None:
        self.subscriber = subscriber
        self.last_id = last_id
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = b""
        self.raw = b""  # chunked body not decoded yet
        self.need = 0  # bytes left in the current chunk
        self.crlf = False  # a chunk's CRLF is due
        self.text = b""  # decoded body not parsed yet
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        resume = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
        topic = self.subscriber.topic
        request = f"GET /events?topic={topic} HTTP/1.1\r\nHost: bench\r\n{resume}\r\n"
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before ': connected' ({exc})"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.head is not None:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return
            status = head.split(b" ", 2)[1]
            if status != b"200" and not self.connected.done():
                self.connected.set_exception(ConnectionError(head[:300].decode("latin-1")))
            self.head = None
            data = head[end + 4 :]
        buf = self.raw + data
        while True:
            if self.need:
                piece = buf[: self.need]
                self.text += piece
                self.need -= len(piece)
                buf = buf[len(piece) :]
                if self.need:
                    break
                self.crlf = True
            if self.crlf:
                if len(buf) < 2:
                    break
                buf = buf[2:]
                self.crlf = False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(buf[:line_end].split(b";")[0], 16)
            buf = buf[line_end + 2 :]
            if size == 0:
                break
            self.need = size
        self.raw = buf
        cut = self.text.rfind(b"\n\n")
        if cut < 0:
            return
        frames, self.text = self.text[:cut], self.text[cut + 2 :]
        for frame in frames.split(b"\n\n"):
            fields: dict[str, str] = {}
            for line in frame.decode().split("\n"):
                if line.startswith(":"):
                    if line == ": connected" and not self.connected.done():
                        self.connected.set_result(None)
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            if "id" in fields or "data" in fields:
                self.subscriber.event(fields, now)


class Subscriber:
    """One subscription that reconnects with ``Last-Event-ID`` when the server closes it."""

    def __init__(self, host: str, port: int, topic: str, on_event: Callable[..., None]) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.on_event = on_event
        self.protocol: SseProtocol | None = None
        self.last_id: str | None = None
        self.received: list[tuple[int, int]] = []  # (publish number, receive ns)
        self.ids: list[str] = []
        self.resets: list[dict[str, str]] = []
        self.reconnects = 0
        self.local_port = 0
        self.worker: int | None = None
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        protocol = SseProtocol(self, self.last_id)
        transport, _ = await loop.create_connection(lambda: protocol, self.host, self.port)
        self.protocol = protocol
        self.local_port = transport.get_extra_info("sockname")[1]
        await asyncio.wait_for(protocol.connected, 10)

    def event(self, fields: dict[str, str], now: int) -> None:
        if "id" in fields:
            self.last_id = fields["id"]
            self.ids.append(fields["id"])
        if fields.get("event") == "reset":
            self.resets.append(fields)
            return
        number = int(fields.get("data", "-1:").split(":", 1)[0])
        self.received.append((number, now))
        self.on_event(self, number, now)

    def keep_connected(self) -> None:
        self.task = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while not self.stopping:
            assert self.protocol is not None
            await self.protocol.lost
            while not self.stopping:
                self.reconnects += 1
                await asyncio.sleep(0.5)
                try:
                    await self.connect()
                    break
                except (OSError, TimeoutError):
                    continue

    def close(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abort()


# -- HTTP/1.1 keep-alive client ------------------------------------------------------------------


class Http:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.local_port = 0

    async def open(self, host: str, port: int) -> Http:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.local_port = self.writer.get_extra_info("sockname")[1]
        return self

    async def request(
        self, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ", 2)[1]), headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


# -- servers -------------------------------------------------------------------------------


def variant_command(name: str, redis: RedisServer | None, prefix: str) -> list[str]:
    values = {"redis_url": redis.url, "redis_prefix": prefix} if redis else {}
    return [*STREAMER, *(token.format(**values) for token in VARIANTS[name])]


def pinning(name: str) -> dict[str, int | None]:
    """The CPUs of the server (all its processes), redis-server and this client; None:
    not pinned (two workers on one CPU could not run in parallel)."""
    if len(ALLOWED) < 2:
        return {"server": None, "redis": None, "client": None}
    server_cpu = None if "--workers" in VARIANTS[name] else ALLOWED[0]
    return {"server": server_cpu, "redis": server_cpu, "client": ALLOWED[1]}


def pin_redis(redis: RedisServer, where: dict[str, int | None]) -> None:
    cpu = where["redis"]
    set_affinity(redis.pid, {cpu} if cpu is not None else set(ALLOWED))


def pin_text(where: dict[str, int | None]) -> str:
    return "/".join("any" if v is None else str(v) for v in where.values())


async def one_per_worker(
    host: str, port: int, pid: int, workers: int, topic: str, on_event: Callable[..., None]
) -> list[Subscriber]:
    """Subscribers until each worker has one (extras closed); one when ``workers`` is 1."""
    chosen: dict[int | None, Subscriber] = {}
    for _ in range(64):
        subscriber = Subscriber(host, port, topic, on_event)
        await subscriber.connect()
        subscriber.worker = worker_of(pid, port, subscriber.local_port) if workers > 1 else pid
        if subscriber.worker in chosen:
            subscriber.close()
        else:
            chosen[subscriber.worker] = subscriber
        if len(chosen) >= workers:
            break
    return list(chosen.values())


# -- part 1: latency ------------------------------------------------------------------------------


async def latency(url: str, pid: int, name: str, args: argparse.Namespace) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    workers = 2 if "--workers" in VARIANTS[name] else 1
    waiting: dict[int, tuple[int, asyncio.Future[None]]] = {}

    def arrived(subscriber: Subscriber, number: int, now: int) -> None:
        entry = waiting.get(number)
        if entry is None:
            return
        left, future = entry
        if left <= 1:
            del waiting[number]
            if not future.done():
                future.set_result(None)
        else:
            waiting[number] = (left - 1, future)

    subscribers = await one_per_worker(host, int(port), pid, workers, "lat", arrived)
    publisher = await Http().open(host, int(port))
    publisher_worker = worker_of(pid, int(port), publisher.local_port) if workers > 1 else pid
    loop = asyncio.get_running_loop()
    sent: dict[int, int] = {}
    publish_ns: list[int] = []
    failures: list[str] = []
    missing = 0
    pad = "x" * args.payload
    try:
        for number in range(-args.warmup_publishes, args.publishes):
            future: asyncio.Future[None] = loop.create_future()
            waiting[number] = (len(subscribers), future)
            body = f"{number}:{time.monotonic_ns()}:{pad}".encode()
            start = time.monotonic_ns()
            status, _headers, content = await asyncio.wait_for(
                publisher.request("POST", "/events/lat", body), 10
            )
            done = time.monotonic_ns()
            if not 200 <= status < 300:
                failures.append(f"{status} {content[:120]!r}")
                waiting.pop(number, None)
                continue
            try:
                await asyncio.wait_for(future, 5)
            except TimeoutError:
                missing += 1
                waiting.pop(number, None)
            if number >= 0:
                sent[number] = start
                publish_ns.append(done - start)
    finally:
        publisher.close()
        for subscriber in subscribers:
            subscriber.close()
    receive: dict[str, list[int]] = {}
    for subscriber in subscribers:
        if workers == 1:
            where = "same process"
        else:
            where = "same worker" if subscriber.worker == publisher_worker else "other worker"
        times = receive.setdefault(where, [])
        times += [now - sent[n] for n, now in subscriber.received if n in sent]
    return {
        "variant": name,
        "publishes": len(publish_ns),
        "failed": failures[:5],
        "failures": len(failures),
        "not_received_in_5s": missing,
        "publish": percentiles(publish_ns),
        "receive": {k: percentiles(v) for k, v in receive.items() if v},
        "subscriber_workers": [s.worker for s in subscribers],
        "publisher_worker": publisher_worker,
    }


# -- part 2: outage -------------------------------------------------------------------------------


class Publish:
    __slots__ = ("done", "error", "event_id", "number", "retry_after", "sent", "status")

    def __init__(self, number: int, sent: int) -> None:
        self.number = number
        self.sent = sent
        self.done = 0
        self.status = 0  # 0: no answer (connection error or timeout)
        self.retry_after: str | None = None
        self.event_id: str | None = None
        self.error: str | None = None


class Pool:
    """Keep-alive connections; a publish takes a free one or opens another."""

    def __init__(self, host: str, port: int, limit: int = 256) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.free: list[Http] = []
        self.busy = 0
        self.skipped = 0  # publishes not sent: every connection was busy

    async def publish(self, record: Publish, body: bytes) -> None:
        if not self.free and self.busy >= self.limit:
            self.skipped += 1
            record.error = "client: no free connection"
            return
        self.busy += 1
        connection = self.free.pop() if self.free else None
        try:
            if connection is None:
                connection = await Http().open(self.host, self.port)
            status, headers, content = await asyncio.wait_for(
                connection.request("POST", "/events/outage", body), 10
            )
            record.done = time.monotonic_ns()
            record.status = status
            record.retry_after = headers.get("retry-after")
            if 200 <= status < 300:
                record.event_id = json.loads(content)["id"]
            else:
                record.error = content[:200].decode(errors="replace")
            if headers.get("connection", "").lower() != "close":
                self.free.append(connection)
                connection = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            record.done = time.monotonic_ns()
            record.error = repr(exc)[:200]
        finally:
            self.busy -= 1
            if connection is not None:
                connection.close()

    def close(self) -> None:
        for connection in self.free:
            connection.close()


async def outage(
    url: str,
    pid: int,
    name: str,
    redis: RedisServer,
    where: dict[str, int | None],
    args: argparse.Namespace,
) -> dict[str, Any]:
    host, port_text = url.removeprefix("http://").rsplit(":", 1)
    port = int(port_text)
    workers = 2 if "--workers" in VARIANTS[name] else 1
    progress = asyncio.Event()  # a subscriber received something
    subscribers = await one_per_worker(
        host, port, pid, workers, "outage", lambda *_: progress.set()
    )
    for subscriber in subscribers:
        subscriber.keep_connected()
    pool = Pool(host, port)
    records: list[Publish] = []
    tasks: set[asyncio.Task[None]] = set()
    pad = "x" * args.payload
    marks: dict[str, int] = {}

    async def control() -> None:
        await asyncio.sleep(args.warmup)
        marks["stop"] = time.monotonic_ns()
        await asyncio.to_thread(redis.stop)
        marks["stopped"] = time.monotonic_ns()
        await asyncio.sleep(args.down)
        marks["restart"] = time.monotonic_ns()
        ready = await asyncio.to_thread(redis.start)
        marks["ready"] = round(ready * 1e9)  # time.monotonic and monotonic_ns: one clock
        pin_redis(redis, where)  # the new redis-server's threads
        await asyncio.sleep(args.after)

    controller = asyncio.create_task(control())
    start = time.monotonic()
    number = 0
    try:
        while not controller.done():
            due = int((time.monotonic() - start) * args.rate) + 1
            while number < due:
                record = Publish(number, time.monotonic_ns())
                records.append(record)
                body = f"{number}:{record.sent}:{pad}".encode()
                task = asyncio.create_task(pool.publish(record, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                number += 1
            await asyncio.sleep(max(0.0, start + number / args.rate - time.monotonic()))
        await controller
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        accepted = {r.number for r in records if 200 <= r.status < 300}
        deadline = time.monotonic() + args.drain_timeout
        while any(not accepted <= {n for n, _ in s.received} for s in subscribers):
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        healthz: dict[str, Any] = {}
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            probe = await Http().open(host, port)
            _status, _headers, content = await asyncio.wait_for(probe.request("GET", "/healthz"), 5)
            probe.close()
            healthz = json.loads(content)
    finally:
        controller.cancel()
        for task in list(tasks):
            task.cancel()
        pool.close()
        for subscriber in subscribers:
            subscriber.close()
    return outage_report(name, records, subscribers, marks, pool, healthz)


def outage_report(
    name: str,
    records: list[Publish],
    subscribers: list[Subscriber],
    marks: dict[str, int],
    pool: Pool,
    healthz: dict[str, Any],
) -> dict[str, Any]:
    def statuses(rs: list[Publish]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in rs:
            key = str(r.status) if r.status else "no answer"
            counts[key] = counts.get(key, 0) + 1
        return counts

    stop, stopped, ready = marks["stop"], marks["stopped"], marks["ready"]
    before = [r for r in records if r.sent < stop]
    stopping = [r for r in records if stop <= r.sent < stopped]  # redis-server still exiting
    during = [r for r in records if stopped <= r.sent < ready]
    after = [r for r in records if r.sent >= ready]
    accepted = {r.number: r for r in records if 200 <= r.status < 300}
    first_ok_after = min((r.done for r in after if r.number in accepted), default=None)
    last_503_after = max((r.sent for r in after if r.status == 503), default=None)
    by_number = {r.number: r for r in records}
    per_subscriber = []
    for s in subscribers:
        counts: dict[int, int] = {}
        for n, _ in s.received:
            counts[n] = counts.get(n, 0) + 1
        numbers = [n for n, _ in s.received]
        first_after = min((now for _, now in s.received if now >= ready), default=None)
        epochs = sorted({i.split("-", 1)[0] for i in s.ids if ID_LINE.match(i)})
        per_subscriber.append(
            {
                "worker": s.worker,
                "received": len(s.received),
                "lost": sum(1 for n in accepted if n not in counts),
                "duplicated": sum(c - 1 for c in counts.values() if c > 1),
                "delivered_not_accepted": sum(1 for n in counts if n not in accepted),
                # which, and how their publish was answered (ms: sent after the SIGTERM)
                "delivered_not_accepted_publishes": [
                    {
                        "number": n,
                        "status": by_number[n].status if n in by_number else None,
                        "sent_after_sigterm_ms": ms(by_number[n].sent - stop)
                        if n in by_number
                        else None,
                        "answer_ms": ms(by_number[n].done - by_number[n].sent)
                        if n in by_number
                        else None,
                        "error": by_number[n].error[:160]
                        if n in by_number and by_number[n].error
                        else None,
                    }
                    for n in sorted(counts)
                    if n not in accepted
                ][:10],
                "out_of_order": sum(1 for a, b in itertools.pairwise(numbers) if b < a),
                "first_event_after_ready_ms": ms(first_after - ready) if first_after else None,
                "resets": s.resets,
                "reconnects": s.reconnects,
                "epochs": epochs,
            }
        )
    unavailable = [r for r in during if r.status == 503]
    return {
        "variant": name,
        "published": len(records),
        "accepted": len(accepted),
        "redis_stop_s": round((marks["stopped"] - stop) / 1e9, 3),
        "redis_down_s": round((ready - marks["stopped"]) / 1e9, 3),
        "redis_restart_to_ping_s": round((ready - marks["restart"]) / 1e9, 3),
        "before": statuses(before),
        "while_stopping": statuses(stopping),
        "during": statuses(during),
        "during_503": percentiles([r.done - r.sent for r in unavailable]),
        "during_other_answer": percentiles([r.done - r.sent for r in during if r.status != 503]),
        "retry_after": sorted({r.retry_after for r in unavailable if r.retry_after}),
        "during_errors": sorted({r.error[:160] for r in during if r.error})[:4],
        "after": statuses(after),
        "after_503_last_sent_ms": ms(last_503_after - ready) if last_503_after else None,
        "first_2xx_after_ready_ms": ms(first_ok_after - ready) if first_ok_after else None,
        "client_skipped": pool.skipped,
        "subscribers": per_subscriber,
        "healthz_after": healthz,
    }


# -- the run ---------------------------------------------------------------------------------


def log_lines(log: Path) -> list[str]:
    keep = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if any(word in line for word in keep)][:40]


def run_part(
    part: str,
    name: str,
    args: argparse.Namespace,
    stamp: str,
    directory: Path,
    shared: RedisServer | None,
) -> dict[str, Any]:
    log = RESULTS / f"redis_broker-{stamp}-{part}-{name}.log"
    own: RedisServer | None = None
    redis = shared if VARIANTS[name] else None
    if part == "outage":
        data = directory / f"outage-{name}"
        data.mkdir()
        own = redis = RedisServer(data, appendonly=True, log=log.with_suffix(".redis.log"))
        own.start()
    try:
        if redis is not None:
            redis_command(redis.port, "FLUSHALL")
        where = pinning(name)
        if redis is not None:
            pin_redis(redis, where)
        print(f"{part} {name}: pin srv/redis/cli {pin_text(where)}", flush=True)
        command = variant_command(name, redis, f"rb-{stamp}-{part}-{name}")
        with server(name, log, where["server"], command) as (url, pid):
            if where["client"] is not None:  # after the server started: it would inherit it
                os.sched_setaffinity(0, {where["client"]})
            if part == "latency":
                coroutine = latency(url, pid, name, args)
            else:
                assert redis is not None
                coroutine = outage(url, pid, name, redis, where, args)
            limit = 120 + args.publishes / 100 + args.warmup + args.down + args.after
            result = asyncio.run(asyncio.wait_for(coroutine, limit))
    finally:
        if own is not None:
            own.stop()
    result["pinning"] = where
    result["command"] = command
    result["server_log"] = str(log.relative_to(ROOT))
    result["server_log_warnings"] = log_lines(log)
    return result


def fmt(value: Any) -> str:
    return fanout_fmt(value, 3)


def latency_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| variant | pin srv/redis/cli | publishes | publish p50 ms | p99 ms | max ms "
        "| subscriber | receive p50 ms | p99 ms | max ms | failed | not received |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        p = r["publish"]
        for where, q in r["receive"].items() or [("-", {})]:
            rows.append(
                f"| {r['variant']} | {pin_text(r['pinning'])} | {r['publishes']} "
                f"| {fmt(p['p50_ms'])} | {fmt(p['p99_ms'])} | {fmt(p['max_ms'])} | {where} "
                f"| {fmt(q.get('p50_ms'))} | {fmt(q.get('p99_ms'))} | {fmt(q.get('max_ms'))} "
                f"| {r['failures']} | {r['not_received_in_5s']} |"
            )
    return "\n".join(rows)


def outage_table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = [
        "| variant | published | 2xx | during outage | 503 answer p50/p99/max ms | Retry-After "
        "| ready -> first 2xx ms | ready -> first event ms | lost | dup | delivered not 2xx "
        "| resets | reconnects |",
        "|---|---:|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        subs = r["subscribers"]
        q = r["during_503"]
        first_events = " / ".join(fmt(s["first_event_after_ready_ms"]) for s in subs)
        rows.append(
            f"| {r['variant']} | {r['published']:,} | {r['accepted']:,} "
            f"| {', '.join(f'{k}: {v}' for k, v in r['during'].items())} "
            f"| {fmt(q['p50_ms'])} / {fmt(q['p99_ms'])} / {fmt(q['max_ms'])} "
            f"| {','.join(r['retry_after']) or '-'} | {fmt(r['first_2xx_after_ready_ms'])} "
            f"| {first_events} | {sum(s['lost'] for s in subs)} "
            f"| {sum(s['duplicated'] for s in subs)} "
            f"| {sum(s['delivered_not_accepted'] for s in subs)} "
            f"| {sum(len(s['resets']) for s in subs)} | {sum(s['reconnects'] for s in subs)} |"
        )
    notes = [
        "",
        f"- {args.rate:g} publishes/s; redis-server stopped (SIGTERM) after {args.warmup:g} s, "
        f"down {args.down:g} s, then {args.after:g} s more; 'during outage': publishes sent "
        "from redis-server's exit until it answered PING again, by answer (no answer: connection "
        "error or 10 s timeout); those sent between the SIGTERM and redis-server's exit are "
        "left out of it. 'ready': redis answering PING after the restart. lost/dup: "
        "over the publishes answered 2xx, summed over the subscribers (one per worker); "
        "'delivered not 2xx': events a subscriber got whose publish was not answered 2xx",
    ]
    for r in runs:
        notes.append(
            f"- {r['variant']}: redis-server took {r['redis_stop_s']} s to exit, was down "
            f"{r['redis_down_s']} s, answered PING {r['redis_restart_to_ping_s']} s after "
            f"its start; before the outage {r['before']}, while it exited "
            f"{r['while_stopping']}, after it {r['after']} (the last "
            f"503 sent {fmt(r['after_503_last_sent_ms'])} ms after ready); epochs seen "
            f"{[s['epochs'] for s in r['subscribers']]}"
        )
        if r["during_errors"]:
            notes.append(f"- {r['variant']}: during the outage, e.g. {r['during_errors'][:2]}")
        if r["client_skipped"]:
            notes.append(f"- {r['variant']}: {r['client_skipped']} publishes not sent (pool full)")
    return "\n".join(rows + notes)


def stopped(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["latency", "outage"], default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--publishes", type=int, default=2000, help="latency: publishes timed")
    parser.add_argument("--warmup-publishes", type=int, default=100, help="latency: not timed")
    parser.add_argument("--payload", type=int, default=100, help="bytes of padding per event")
    parser.add_argument("--rate", type=float, default=200.0, help="outage: publishes per second")
    parser.add_argument("--warmup", type=float, default=3.0, help="outage: seconds before it")
    parser.add_argument("--down", type=float, default=5.0, help="outage: seconds redis is down")
    parser.add_argument("--after", type=float, default=10.0, help="outage: seconds after it")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args()
    parts = args.parts or ["latency", "outage"]
    signal.signal(signal.SIGTERM, stopped)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"redis_broker-{stamp}.json"
    report: dict[str, Any] = {
        "meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **git_commit(ROOT)},
        "args": vars(args),
        "latency": [],
        "outage": [],
    }
    with contextlib.ExitStack() as cleanup:
        directory = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rb-")))
        shared = None
        if "latency" in parts:
            log = RESULTS / f"redis_broker-{stamp}-redis.log"
            shared = cleanup.enter_context(RedisServer(directory, log=log))
        for part in parts:
            names = args.variants or (
                list(VARIANTS) if part == "latency" else ["redis", "redis-2w"]
            )
            for name in names:
                if part == "outage" and not VARIANTS[name]:
                    continue  # the memory broker has no Redis to lose
                try:
                    result = run_part(part, name, args, stamp, directory, shared)
                except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
                    print(f"    failed: {exc!r}", flush=True)
                    result = {"variant": name, "error": repr(exc)}
                finally:
                    os.sched_setaffinity(0, ALLOWED)
                report[part].append(result)
                out.write_text(json.dumps(report, indent=2))
    print()
    if report["latency"]:
        print("Publish latency, one publish at a time (answer, and event at the subscriber):\n")
        print(latency_table([r for r in report["latency"] if "error" not in r]))
        print()
    if report["outage"]:
        print("Redis outage:\n")
        print(outage_table([r for r in report["outage"] if "error" not in r], args))
        print()
    for part in ("latency", "outage"):
        for r in report[part]:
            if "error" in r:
                print(f"- {part} {r['variant']}: failed: {r['error']}")
            elif r.get("server_log_warnings"):
                print(f"- {part} {r['variant']}: server log: {r['server_log_warnings'][:6]}")
    print(f"\nraw results: {out.relative_to(ROOT)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
