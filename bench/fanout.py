"""Fan-out benchmark: streamer against the queue-per-subscriber baseline, side by side.

For each subscriber count, each server is started in turn (pinned to CPU 0),
the load client (bench/load_client.py, pinned to CPU 1) connects the
subscribers, publishes at a fixed rate, and reports deliveries/s, latency,
lost/duplicated events and server RSS per idle subscriber. Prints a markdown
table and writes the raw results to bench/results/.

    python bench/fanout.py                       # 1k and 10k subscribers
    python bench/fanout.py --subscribers 200 --duration 3   # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SERVERS = {
    "streamer": [
        sys.executable,
        "-m",
        "streamer",
        "serve",
        "--port",
        "0",
        "--heartbeat",
        "60",
    ],
    "queue-baseline": [sys.executable, str(HERE / "queue_baseline.py"), "--port", "0"],
}


def pinned(command: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if (os.cpu_count() or 1) > 1 else command


@contextlib.contextmanager
def server(name: str, log: Path) -> Iterator[tuple[str, int]]:
    """Start one server; its output goes to ``log`` (a pipe would cost it CPU and latency)."""
    env = {**os.environ, "STREAMER_LOG_LEVEL": "info"}  # the "listening on" line is INFO
    with log.open("w") as output:
        process = subprocess.Popen(
            pinned(SERVERS[name], 0), stdout=output, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
    try:
        url = None
        deadline = time.monotonic() + 15
        while url is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"listening on (http://\S+)", log.read_text())
            if match is None:
                time.sleep(0.05)
                continue
            url = match[1]
        if url is None:
            raise RuntimeError(f"{name} did not start: see {log}")
        yield url, process.pid  # taskset execs the server: the pid is the server's own
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_client(
    url: str, pid: int, subscribers: int, rate: float, duration: float
) -> dict[str, Any]:
    command = pinned(
        [
            sys.executable,
            str(HERE / "load_client.py"),
            "--url",
            url,
            "--server-pid",
            str(pid),
            "--subscribers",
            str(subscribers),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
        ],
        1,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| server | subs | rate ev/s | deliveries/s | p50 ms | p99 ms | max ms | lost | dup "
        "| dropped | RSS B/idle sub |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['server']} | {r['subscribers']} | {r['rate']:g} | {r['deliveries_per_s']:,} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['lost']} | {r['duplicated']} "
            f"| {r['dropped_connections']} | {r['rss_per_idle_subscriber_bytes']:,} |"
        )
    ratios = []
    by_key = {(r["server"], r["subscribers"]): r for r in results}
    for subs in sorted({r["subscribers"] for r in results}):
        ours, base = by_key.get(("streamer", subs)), by_key.get(("queue-baseline", subs))
        if ours and base:
            speedup = ours["deliveries_per_s"] / max(1, base["deliveries_per_s"])
            latency = base["p99_ms"] / max(0.01, ours["p99_ms"])
            ratios.append(
                f"- {subs} subscribers: deliveries/s x{speedup:.1f}, "
                f"p99 latency 1/{latency:.1f} of the baseline"
            )
    return "\n".join([*rows, "", *ratios])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=None,
        help="events/s per subscriber count (default: 1M deliveries/s offered)",
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    args = parser.parse_args()
    rates = args.rate or [1_000_000 / n for n in args.subscribers]
    results = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"fanout-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    for subscribers, rate in zip(args.subscribers, rates, strict=False):
        for name in args.servers:
            with server(name, out.with_name(f"fanout-{stamp}-{name}-{subscribers}.log")) as (
                url,
                pid,
            ):
                result = run_client(url, pid, subscribers, rate, args.duration)
            result["server"] = name
            results.append(result)
            print(json.dumps(result), flush=True)
    out.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
