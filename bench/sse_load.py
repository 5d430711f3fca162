"""SSE fan-out load client: N subscribers, one fixed-rate publisher, and what arrived when.

Measures, against one running server (streamer or bench/baseline_queue.py):

* deliveries/s: events received by all subscribers together, divided by the
  time from the first publish to the last receipt (at least ``--duration``);
* lost (gaps in the ids), duplicated or out-of-order (id not above the last
  one), events still undelivered when the drain timeout ends, connections the
  server closed;
* publish-to-receive latency p50/p99/max, over every event received by a
  sample of the subscribers (every ``--sample``-th; by default all of them,
  or every k-th so that about 100k events/s are timed: 1 in 10 at 1M/s);
* server RSS (``/proc/PID/status``) before subscribing, with N idle
  subscribers (-> bytes per idle subscriber) and at the end; the CPU share
  the server and this client used while publishing and draining (a client
  near 100% means the client, not the server, set the pace). The server is
  ``--server-pid`` and all its descendants (``--workers``: the supervisor and
  every worker), RSS and CPU summed; ``--redis-pid`` adds a redis-server's CPU.

Subscribers are raw asyncio protocols (uvloop when importable) opened in
batches. Every subscriber checks the ids of what it reads: per read it counts
the ``id: `` lines and parses only the first and last (C-speed
``bytes.count`` / ``find``); when they are not exactly the next ids in order,
it walks every event of that read to count the gaps and duplicates. This
catches any net loss or duplication and any disorder across reads, but not a
duplicate and a gap that cancel out inside one read: sampled subscribers, and
all of them with ``--full-check``, walk every event. The publisher sends
``POST /events/bench`` at the offered rate whatever the server answers (open
loop, HTTP/1.1 pipelining, no coordinated omission), round-robin over
``--publishers`` keep-alive connections; each payload starts with
``time.monotonic_ns()`` at sending. The number of publisher connections
matters: aiohttp handles one connection's requests one after the other, a
loop iteration or more each, so events from a single connection never
arrive in the same loop iteration and streamer cannot coalesce them.
Prints a human summary on stderr and one JSON line on stdout.

    python bench/sse_load.py --url http://127.0.0.1:8080 --server-pid PID --subscribers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import sys
import time
from collections.abc import Coroutine
from typing import Any, cast

from variants import process_tree, tree_cpu_seconds, tree_rss_kib  # bench/ is on sys.path

TOPIC = "bench"
SUBSCRIBE = f"GET /events?topic={TOPIC} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
CONNECTED = b": connected\n\n"
ID = b"id: "
DATA = b"\ndata: "
MAX_TAIL = 64 * 1024  # an unfinished event longer than this means the stream is broken


# -- measurements shared by all subscribers ------------------------------------------------


class Stats:
    """Counters every subscriber adds to, and the latency histogram of the sampled ones."""

    __slots__ = (
        "all_done",
        "bad_streams",
        "done",
        "hist",
        "last_event_ns",
        "max_latency_ns",
        "samples",
        "target",
        "total",
    )

    def __init__(self, total: int) -> None:
        self.total = total
        self.target = sys.maxsize  # the last seq, once publishing is over
        self.done = 0  # subscribers that have the target, or were closed
        self.all_done = asyncio.Event()
        self.last_event_ns = 0
        self.samples = 0
        self.max_latency_ns = 0
        # latency in µs -> count; exact below 1024 µs, 10 significant bits above (<0.2% error)
        self.hist: dict[int, int] = {}
        self.bad_streams = 0

    def finish(self, subscriber: Subscriber) -> None:
        if not subscriber.finished:
            subscriber.finished = True
            self.done += 1
            if self.done >= self.total:
                self.all_done.set()

    def percentile_ms(self, q: float) -> float | None:
        if not self.samples:
            return None
        rank = q * self.samples
        seen = 0
        for key in sorted(self.hist):
            seen += self.hist[key]
            if seen >= rank:
                return key / 1000
        return self.max_latency_ns / 1e6


def bucket(latency_us: int) -> int:
    if latency_us < 1024:
        return max(0, latency_us)
    shift = latency_us.bit_length() - 10
    return (latency_us >> shift) << shift


def parse_seq(buf: bytes, pos: int) -> tuple[int, int]:
    """The seq of the ``id: <epoch>-<seq>`` line at ``pos``, and where that line ends."""
    end = buf.index(b"\n", pos)
    return int(buf[buf.index(b"-", pos, end) + 1 : end]), end


class Subscriber(asyncio.Protocol):
    """One SSE subscription: waits for ``: connected``, then checks every event id."""

    __slots__ = (
        "closed_by_server",
        "connected",
        "count",
        "dup",
        "finished",
        "first",
        "head",
        "last",
        "lost",
        "sampled",
        "stats",
        "tail",
        "transport",
        "walk",
    )

    def __init__(
        self, stats: Stats, sampled: bool, connected: asyncio.Future[None], walk: bool = False
    ) -> None:
        self.stats = stats
        self.sampled = sampled  # times every event
        self.walk = walk or sampled  # checks every event id, not just the first and last per read
        self.connected = connected
        self.transport: asyncio.Transport | None = None
        self.head: bytes | None = b""  # response head until ": connected"
        self.tail = b""  # an unfinished event carried over to the next read
        self.count = 0  # events received, duplicates excluded
        self.first = 0  # first seq received
        self.last = 0  # highest seq received
        self.lost = 0  # seqs skipped over
        self.dup = 0  # seqs at or below the highest one already received
        self.closed_by_server = False
        self.finished = False  # has the last event, or is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(SUBSCRIBE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_by_server = True
        self.stats.finish(self)
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before ': connected' ({exc})"))

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            head = self.head + data
            at = head.find(CONNECTED)
            if at < 0:
                self.head = head
                if len(head) > MAX_TAIL and not self.connected.done():
                    self.connected.set_exception(ConnectionError(head[:300].decode("latin-1")))
                return
            data = head[at + len(CONNECTED) :]
            self.head = None
            self.connected.set_result(None)
            if not data:
                return
        now = time.monotonic_ns()
        buf = self.tail + data if self.tail else data
        cut = buf.rfind(b"\n\n") + 2  # everything before is whole events (and chunk framing)
        if cut == 1:
            self.tail = buf
            if len(buf) > MAX_TAIL:
                self._broken()
            return
        self.tail = buf[cut:]
        if self.walk:
            self._walk(buf, cut, now)
            if self.last >= self.stats.target:
                self.stats.finish(self)
            return
        n = buf.count(ID, 0, cut)
        if not n:
            return  # a heartbeat
        first, _ = parse_seq(buf, buf.find(ID))
        last = first if n == 1 else parse_seq(buf, buf.rfind(ID, 0, cut))[0]
        if last - first + 1 == n and (first == self.last + 1 or not self.last):
            if not self.last:
                self.first = first
            self.count += n
            self.last = last
            self.stats.last_event_ns = now
        else:
            self._walk(buf, cut, now)
        if self.last >= self.stats.target:
            self.stats.finish(self)

    def _walk(self, buf: bytes, cut: int, now: int) -> None:
        """Check every event id in ``buf[:cut]``; sampled subscribers also record latency."""
        stats = self.stats
        sampled = self.sampled
        hist = stats.hist
        pos = buf.find(ID, 0, cut)
        if pos < 0:
            return
        while pos >= 0:
            seq, end = parse_seq(buf, pos)
            if not self.last:
                self.first = self.last = seq
                self.count += 1
            elif seq == self.last + 1:
                self.last = seq
                self.count += 1
            elif seq > self.last:
                self.lost += seq - self.last - 1
                self.last = seq
                self.count += 1
            else:
                self.dup += 1
            if sampled:
                start = buf.index(DATA, end) + len(DATA)
                latency = now - int(buf[start : buf.index(b":", start)])
                key = bucket(latency // 1000)
                hist[key] = hist.get(key, 0) + 1
                stats.samples += 1
                if latency > stats.max_latency_ns:
                    stats.max_latency_ns = latency
            pos = buf.find(ID, end, cut)
        stats.last_event_ns = now

    def _broken(self) -> None:
        self.stats.bad_streams += 1
        self.tail = b""
        if self.transport is not None:
            self.transport.abort()


# -- the publisher -----------------------------------------------------------------------------


class Publishing:
    """The publisher: ``POST /events/bench`` round-robin over keep-alive connections.

    Requests are written on schedule whether or not earlier ones were answered
    (HTTP/1.1 pipelining), so the offered load does not depend on the server.
    """

    def __init__(self, payload_size: int) -> None:
        self.pad = b"x" * payload_size
        self.connections: list[PublishConnection] = []
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self.seqs: list[int] = []
        self.errors: list[str] = []
        self.all_answered = asyncio.Event()
        self.target = -1
        self.closing = False  # we close the connections ourselves at the end

    def send(self, count: int) -> None:
        now = time.monotonic_ns()
        width = len(self.connections)
        batches: list[list[bytes]] = [[] for _ in range(width)]
        for n in range(self.sent, self.sent + count):
            body = (b"%d:%d:%b" % (now, n, self.pad))[: len(self.pad)]
            batches[n % width].append(
                b"POST /events/%b HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (TOPIC.encode(), len(body), body)
            )
        for connection, batch in zip(self.connections, batches, strict=True):
            if batch and connection.transport is not None:
                connection.transport.write(b"".join(batch))
        self.sent += count

    def answer(self, status: int, body: bytes) -> None:
        self.answered += 1
        if status == 201:
            self.seqs.append(int(json.loads(body)["id"].rsplit("-", 1)[1]))
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"publish answered {status}: {body[:200]!r}")
        if self.answered == self.target:
            self.all_answered.set()

    def close(self) -> None:
        self.closing = True
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.abort()


class PublishConnection(asyncio.Protocol):
    """One publisher connection: reads the pipelined answers back, in order."""

    def __init__(self, publishing: Publishing) -> None:
        self.publishing = publishing
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        publishing = self.publishing
        if not publishing.all_answered.is_set() and not publishing.closing:
            publishing.errors.append(f"publisher connection lost before all answers: {exc}")
            publishing.all_answered.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) < head_end + 4 + length:
                break
            body = buf[head_end + 4 : head_end + 4 + length]
            buf = buf[head_end + 4 + length :]
            self.publishing.answer(int(head.split(" ", 2)[1]), body)
        self.buffer = buf


async def publish(publishing: Publishing, rate: float, duration: float) -> tuple[int, int]:
    """Send ``rate * duration`` events on schedule; returns (start_ns, end_ns)."""
    total = max(1, round(rate * duration))
    publishing.target = total
    start = time.monotonic()
    start_ns = time.monotonic_ns()
    while publishing.sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > publishing.sent:
            publishing.send(due - publishing.sent)
        next_at = start + publishing.sent / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return start_ns, time.monotonic_ns()


# -- server-side numbers ---------------------------------------------------------------------


# A server is the process started and all its descendants (``--workers``: a supervisor,
# its workers, multiprocessing's resource tracker): RSS and CPU are summed over them.
rss_kib = tree_rss_kib
cpu_seconds = tree_cpu_seconds


def open_fds(pid: int) -> dict[int, int]:
    """Open files per process of the server: how the kernel spread the connections."""
    counts = {}
    for member in sorted(process_tree(pid)):
        with contextlib.suppress(OSError):
            counts[member] = len(os.listdir(f"/proc/{member}/fd"))
    return counts


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def http_get_json(host: str, port: int, path: str) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    result: dict[str, Any] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    return result


# -- the run ------------------------------------------------------------------------------------


async def connect_all(
    host: str, port: int, count: int, sample: int, batch: int, stats: Stats, walk: bool
) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []
    for start in range(0, count, batch):
        futures: list[asyncio.Future[None]] = []
        connects: list[Coroutine[Any, Any, Any]] = []
        for n in range(start, min(count, start + batch)):
            future: asyncio.Future[None] = loop.create_future()
            subscriber = Subscriber(stats, n % sample == 0, future, walk)
            subscribers.append(subscriber)
            futures.append(future)
            connects.append(loop.create_connection(lambda s=subscriber: s, host, port))  # type: ignore[misc]
        await asyncio.gather(*connects)
        await asyncio.wait_for(asyncio.gather(*futures), 60)
    return subscribers


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port_text = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    port = int(port_text)
    pid = args.server_pid
    # Latency from every sample-th subscriber: all of them unless that would
    # mean more than ~100k walked events/s, which would make the client the limit.
    sample = args.sample or max(1, math.ceil(args.subscribers * args.rate / 100_000))
    stats = Stats(args.subscribers)

    rss_before = rss_kib(pid) if pid else 0
    connect_start = time.monotonic()
    subscribers = await connect_all(
        host, port, args.subscribers, sample, args.batch, stats, args.full_check
    )
    connect_s = time.monotonic() - connect_start
    health_idle = await http_get_json(host, port, "/healthz")
    await asyncio.sleep(args.settle)
    rss_idle = rss_kib(pid) if pid else 0
    fds_idle = open_fds(pid) if pid else {}

    publisher = Publishing(args.payload)
    for _ in range(args.publishers):
        _, connection = await loop.create_connection(
            lambda: PublishConnection(publisher), host, port
        )
        publisher.connections.append(connection)
    gc.collect()
    gc.freeze()  # the 10k long-lived protocol objects: no need to scan them again
    gc.disable()
    processes_start = len(process_tree(pid)) if pid else 0
    redis_cpu0 = cpu_seconds(args.redis_pid) if args.redis_pid else 0.0
    server_cpu0, client_cpu0 = cpu_seconds(pid) if pid else 0.0, own_cpu_seconds()
    start_ns, end_ns = await publish(publisher, args.rate, args.duration)

    # Drain: every subscriber has the last event, or the timeout ends it.
    deadline = time.monotonic() + args.drain_timeout
    with_answers = True
    try:
        await asyncio.wait_for(publisher.all_answered.wait(), args.drain_timeout)
    except TimeoutError:
        with_answers = False
    first_seq = min(publisher.seqs) if publisher.seqs else 1
    published = publisher.sent - publisher.failed
    last_seq = first_seq + published - 1
    stats.target = last_seq
    for s in subscribers:
        if s.last >= last_seq or s.closed_by_server:
            stats.finish(s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stats.all_done.wait(), max(0.0, deadline - time.monotonic()))
    drain_end_ns = time.monotonic_ns()
    for s in subscribers:  # nothing that arrives from now on counts
        if s.transport is not None and not s.closed_by_server:
            s.transport.pause_reading()
    server_cpu1, client_cpu1 = cpu_seconds(pid) if pid else 0.0, own_cpu_seconds()
    redis_cpu1 = cpu_seconds(args.redis_pid) if args.redis_pid else 0.0
    processes_end = len(process_tree(pid)) if pid else 0
    gc.enable()

    # Snapshot before anything else can arrive.
    received = sum(s.count for s in subscribers)
    lost_gaps = sum(s.lost for s in subscribers)
    lost_head = sum(max(0, s.first - first_seq) for s in subscribers if s.count)
    dup = sum(s.dup for s in subscribers)
    beyond = sum(max(0, s.last - last_seq) for s in subscribers)
    dropped = [s for s in subscribers if s.closed_by_server]
    missing_dropped = sum(max(0, last_seq - s.last) if s.count else published for s in dropped)
    late = sum(
        max(0, last_seq - s.last) if s.count else published
        for s in subscribers
        if not s.closed_by_server
    )
    expected = published * args.subscribers
    last_event_ns = stats.last_event_ns or drain_end_ns
    # The n events are due over n/rate seconds (the last at (n-1)/rate): count at least that.
    elapsed = max(publisher.sent / args.rate, (last_event_ns - start_ns) / 1e9)
    window = max(1e-9, (drain_end_ns - start_ns) / 1e9)

    rss_end = rss_kib(pid) if pid else 0
    try:
        health_end: dict[str, Any] = await http_get_json(host, port, "/healthz")
    except (OSError, TimeoutError, ValueError) as exc:
        health_end = {"error": repr(exc)}
    for s in subscribers:
        if s.transport is not None:
            s.transport.abort()
    publisher.close()

    seqs = sorted(publisher.seqs)
    counts = sorted(s.count for s in subscribers)
    result: dict[str, Any] = {
        "subscribers": args.subscribers,
        "rate": args.rate,
        "duration": args.duration,
        "payload_bytes": args.payload,
        "publishers": args.publishers,
        "offered_deliveries_per_s": round(args.rate * args.subscribers),
        "published": published,
        "publish_sent": publisher.sent,
        "publish_answered": publisher.answered,
        "publish_failed": publisher.failed,
        "publish_all_answered": with_answers,
        "publish_ids_consecutive": seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        if seqs
        else None,
        "publish_s": round((end_ns - start_ns) / 1e9, 3),
        "publish_errors": publisher.errors,
        "deliveries_expected": expected,
        "deliveries": received,
        "delivered_pct": round(100 * received / max(1, expected), 2),
        "deliveries_per_s": round(received / elapsed),
        "elapsed_s": round(elapsed, 3),
        "lost": lost_gaps + lost_head,
        "duplicated": dup,
        "beyond_last": beyond,
        "undelivered_late": late,
        "undelivered_dropped": missing_dropped,
        "dropped_connections": len(dropped),
        "received_per_subscriber": {
            "min": counts[0],
            "p50": counts[len(counts) // 2],
            "max": counts[-1],
        },
        "bad_streams": stats.bad_streams,
        "latency_sample_every": sample,
        "full_check": args.full_check,
        "latency_samples": stats.samples,
        "p50_ms": stats.percentile_ms(0.50),
        "p99_ms": stats.percentile_ms(0.99),
        "p999_ms": stats.percentile_ms(0.999),
        "latency_note": "bucket lower bounds: exact to 1 µs below 1 ms, within 0.2% above",
        "max_ms": round(stats.max_latency_ns / 1e6, 3) if stats.samples else None,
        "connect_s": round(connect_s, 2),
        "healthz_subscribers_idle": health_idle.get("subscribers"),
        "healthz_end": health_end,
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "rss_end_kib": rss_end,
        "rss_per_idle_subscriber_kib": round((rss_idle - rss_before) / args.subscribers, 2),
        "server_cpu_pct": round(100 * (server_cpu1 - server_cpu0) / window, 1),
        "client_cpu_pct": round(100 * (client_cpu1 - client_cpu0) / window, 1),
        # CPU seconds over the same window as "deliveries" (first publish to end of drain)
        "server_cpu_s": round(server_cpu1 - server_cpu0, 3),
        "client_cpu_s": round(client_cpu1 - client_cpu0, 3),
        "cpu_window_s": round(window, 3),
        "server_processes": [processes_start, processes_end],  # at the window's start, end
        "open_fds_idle": fds_idle,  # per server process, with every subscriber connected
        **(
            {
                "redis_cpu_pct": round(100 * (redis_cpu1 - redis_cpu0) / window, 1),
                "redis_cpu_s": round(redis_cpu1 - redis_cpu0, 3),
            }
            if args.redis_pid
            else {}
        ),
        "loop": type(loop).__module__.split(".")[0],
    }
    return result


def summary(r: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{r['subscribers']} subs x {r['rate']:g} ev/s for {r['duration']:g}s: "
        f"{r['deliveries']:,}/{r['deliveries_expected']:,} deliveries ({r['delivered_pct']}%), "
        f"{r['deliveries_per_s']:,}/s over {r['elapsed_s']}s; latency p50 {ms(r['p50_ms'])} "
        f"p99 {ms(r['p99_ms'])} max {ms(r['max_ms'])} ms ({r['latency_samples']:,} samples); "
        f"lost {r['lost']}, dup {r['duplicated']}, late {r['undelivered_late']:,}, "
        f"dropped conns {r['dropped_connections']}; "
        f"RSS {r['rss_per_idle_subscriber_kib']} KiB/idle sub; "
        f"CPU server {r['server_cpu_pct']}% client {r['client_cpu_pct']}%"
        + (f" redis {r['redis_cpu_pct']}%" if "redis_cpu_pct" in r else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL, http://127.0.0.1:PORT")
    parser.add_argument(
        "--server-pid",
        type=int,
        default=0,
        help="for RSS and CPU, summed over it and its descendants (0: skip)",
    )
    parser.add_argument(
        "--redis-pid", type=int, default=0, help="a redis-server whose CPU to report too"
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="events published per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per event")
    parser.add_argument(
        "--publishers",
        type=int,
        default=16,
        help="publisher connections, requests round-robin (with 1, streamer cannot coalesce)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=0,
        help="latency from every Nth subscriber (0: all, or fewer above 100k deliveries/s)",
    )
    parser.add_argument(
        "--full-check",
        action="store_true",
        help="every subscriber checks every id (slower client; the default per-read check "
        "misses a duplicate and a gap that cancel out within one read)",
    )
    parser.add_argument("--batch", type=int, default=500, help="connections opened at once")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before RSS")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.payload < 48:
        parser.error("--payload must be at least 48 bytes (it carries the send time)")
    if args.subscribers + 100 > hard:
        parser.error(f"{args.subscribers} subscribers need more than the {hard} open files allowed")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(summary(result), file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
