"""Load client for the fan-out benchmark: N SSE subscribers and a fixed-rate publisher.

Raw asyncio protocols (uvloop when installed) keep the client cheaper than
the servers it measures. Every subscriber counts the events it receives;
every ``--sample``-th subscriber also parses each event, checks the ids are
consecutive (nothing lost, nothing duplicated, in order) and records the
publish-to-receive latency. The publisher sends ``--rate`` events/s for
``--duration`` seconds without waiting for replies (up to 64 in flight), so a
slow server cannot slow the offered load down. Prints one JSON line.

    python bench/load_client.py --url http://127.0.0.1:8080 --subscribers 1000 --server-pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import time
from pathlib import Path
from typing import Any

import aiohttp

TOPIC = "bench"
EVENT = re.compile(rb"id: \d+-(\d+)\nevent: message\ndata: (\d+) ")
PAYLOAD_PAD = "x" * 80


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Subscriber(asyncio.Protocol):
    """Counts events; when ``sampled``, also checks ids and measures latency."""

    def __init__(self, sampled: bool, latencies: list[int]) -> None:
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.sampled = sampled
        self.latencies = latencies
        self.count = 0
        self.last_seq = 0
        self.lost = 0
        self.duplicated = 0
        self.last_receive = 0
        self._head = b""
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        request = f"GET /events?topic={TOPIC} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        transport.write(request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.connected.done():
            self._head += data
            if b": connected\n\n" not in self._head:
                return
            data = self._head.split(b": connected\n\n", 1)[1]
            self._head = b""
            self.connected.set_result(None)
        self.last_receive = time.monotonic_ns()
        if not self.sampled:
            self.count += data.count(b"\nevent: ")
            return
        data = self._tail + data
        end = 0
        for match in EVENT.finditer(data):
            seq = int(match[1])
            if seq <= self.last_seq:
                self.duplicated += 1
            elif self.last_seq and seq != self.last_seq + 1:
                self.lost += seq - self.last_seq - 1
            self.last_seq = max(self.last_seq, seq)
            self.count += 1
            self.latencies.append(self.last_receive - int(match[2]))
            end = match.end()
        self._tail = data[end:][-4096:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before : connected"))
        if not self.closed.done():
            self.closed.set_result(None)


async def connect_all(host: str, port: int, count: int, sample: int) -> tuple[list, list[int]]:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    subscribers: list[Subscriber] = []
    for start in range(0, count, 500):
        batch = [
            Subscriber(n % sample == 0, latencies) for n in range(start, min(count, start + 500))
        ]
        await asyncio.gather(
            *(loop.create_connection(lambda s=s: s, host, port) for s in batch)  # type: ignore[misc]
        )
        await asyncio.wait_for(asyncio.gather(*(s.connected for s in batch)), 30)
        subscribers += batch
    return subscribers, latencies


async def publish_at_rate(url: str, rate: float, duration: float) -> tuple[int, int, float]:
    """Returns (sent, failed, start time in ns)."""
    connector = aiohttp.TCPConnector(limit=64)
    sent = failed = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failed
            body = f"{time.monotonic_ns()} {PAYLOAD_PAD}"  # ~100 bytes
            try:
                async with session.post(f"{url}/events/{TOPIC}", data=body) as response:
                    if response.status != 201:
                        failed += 1
            except aiohttp.ClientError:
                failed += 1

        total = int(rate * duration)
        start = time.monotonic()
        start_ns = time.monotonic_ns()
        tasks = []
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
            sent += 1
        await asyncio.gather(*tasks)
    return sent, failed, start_ns


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.url.removeprefix("http://").rsplit(":", 1)
    rss_before = rss_kib(args.server_pid)
    subscribers, latencies = await connect_all(host, int(port), args.subscribers, args.sample)
    await asyncio.sleep(1.0)  # let the server settle before reading its memory
    rss_idle = rss_kib(args.server_pid)

    sent, failed, start_ns = await publish_at_rate(args.url, args.rate, args.duration)
    expected = sent - failed
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline:
        if all(s.count >= expected or s.closed.done() for s in subscribers):
            break
        await asyncio.sleep(0.05)
    rss_end = rss_kib(args.server_pid)

    received = sum(min(s.count, expected) for s in subscribers)
    over = sum(max(0, s.count - expected) for s in subscribers)
    dropped = sum(1 for s in subscribers if s.closed.done())
    last = max((s.last_receive for s in subscribers), default=start_ns)
    elapsed = max(1e-9, (last - start_ns) / 1e9)
    result = {
        "subscribers": args.subscribers,
        "rate": args.rate,
        "duration": args.duration,
        "published": sent,
        "publish_failed": failed,
        "deliveries_expected": expected * args.subscribers,
        "deliveries": received,
        "deliveries_per_s": round(received / elapsed),
        "elapsed_s": round(elapsed, 2),
        "lost": expected * args.subscribers
        - received
        + sum(s.lost for s in subscribers if s.sampled),
        "duplicated": over + sum(s.duplicated for s in subscribers if s.sampled),
        "dropped_connections": dropped,
        "latency_samples": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(percentile(latencies, 1.0), 2),
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "rss_end_kib": rss_end,
        "rss_per_idle_subscriber_bytes": round((rss_idle - rss_before) * 1024 / args.subscribers),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--sample", type=int, default=10, help="parse every Nth subscriber")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
