"""Log tail benchmark: append-to-subscriber latency and sustained lines/s, with `tail -F` as
the latency reference, side by side in one run.

The server (``streamer serve --logs DIR``) and the reference (``tail -F -n0``)
run pinned to CPU 0; this script (writer and readers) on CPU 1.

* **latency**: 2,000 lines written one per millisecond, then 100 bursts of
  20 lines every 20 ms; each line carries ``time.monotonic_ns()`` at its
  write; p50/p99/max of receive minus write, for streamer's SSE tail and for
  ``tail -F`` piped to this process.
* **throughput**: 1,000,000 lines of ~100 bytes appended as fast as the
  writer can, read by 1 and then by 100 subscribers; lines/s per subscriber
  from the first write to the last line received, lost/duplicated lines
  (subscriber 0 checks every line, the others count them), the server's
  RSS before and after (and its peak so far, ``VmHWM``), and its CPU time
  (``/proc/PID/stat`` utime + stime from the first write to the last line
  received) per line delivered (one line to one subscriber).

Servers (``--servers``, run one after the other): ``streamer``; ``streamer-before``,
the same command run in an older checkout (``--before DIR``, e.g. a
``git worktree``; flags that code does not have are left out); ``streamer-asyncio``
/ ``streamer-uvloop`` pin the event loop (``streamer`` runs its default, asyncio).
``--before`` adds streamer-before to the default.
Prints markdown tables, streamer against the others by latency, lines/s and
CPU per line, and writes JSON to bench/results/.

    python bench/logtail.py              # ~1 minute
    python bench/logtail.py --lines 200000
    python bench/logtail.py --before DIR --servers \
        streamer-asyncio streamer-before streamer-uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from variants import (  # bench/ is on sys.path
    LOOP_VARIANTS,
    before_tree,
    clean_env,
    git_commit,
    old_command,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
STARTED = time.strftime("%Y%m%d-%H%M%S")  # names this run's files in RESULTS
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
LISTENING = re.compile(r"listening on (http://[^\s)]+)")
LINE = re.compile(rb"data: t=(\d+) n=(\d+)")
DRAINS: set[asyncio.Task[None]] = set()  # keeps the server-output readers alive
SERVERS = ["streamer", "streamer-before", *LOOP_VARIANTS]
CWD: dict[str, Path] = {}  # a server's working directory when not ROOT
COMMANDS: dict[str, list[str]] = {}  # what each server ran, for the JSON
MAX_BUFFER = 128 << 20  # per subscriber: more than all 1,000,000 lines, so none is cut


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pin(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu})


def rss(pid: int, field: str = "VmRSS") -> int:
    """The server's resident memory now (``VmHWM``: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def start_server(name: str, logs: Path) -> tuple[asyncio.subprocess.Process, str]:
    command = [
        PYTHON, "-m", "streamer", "serve", "--port", "0", "--logs", str(logs),
        "--log-level", "info", "--max-buffer", str(MAX_BUFFER),
        # room for every subscriber's --max-buffer: the 1,000,000 lines arrive in 0.2 s
        # and 100 readers lag by MBs each; at the default budget (1 GiB here) the ones
        # lagging most are cut, as they should be, and this client does not resume
        "--max-unsent", str(100 * MAX_BUFFER),
        *LOOP_VARIANTS.get(name, []),
    ]  # fmt: skip
    if name == "streamer-before":
        command, dropped = old_command(command, CWD[name])
        if dropped:
            print(f"{name}: {' '.join(dropped)} not in {CWD[name]}, left out", file=sys.stderr)
    COMMANDS[name] = command
    process = await asyncio.create_subprocess_exec(
        *command, cwd=CWD.get(name, ROOT), env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, preexec_fn=pin(0),
    )  # fmt: skip
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        if not line:
            raise RuntimeError(f"{name} did not start")
        match = LISTENING.search(line.decode())
        if match:
            RESULTS.mkdir(exist_ok=True)
            log = RESULTS / f"logtail-{STARTED}-{name}.log"
            DRAINS.add(asyncio.create_task(_drain(process.stdout, log)))
            return process, match[1]


async def _drain(stream: asyncio.StreamReader, log: Path) -> None:
    """Keep the server's output (its log, to see why a stream ended) beside the results."""
    with log.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)


async def open_tail(url: str, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    writer.write(f"GET /logs/{name} HTTP/1.0\r\n\r\n".encode())
    buffer = b""
    while b": connected\n\n" not in buffer:
        buffer += await reader.read(65536)
    return reader, writer


class Timed:
    """Collects the latency of every line read from a stream of ``t=<ns> n=<i>`` lines."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seen: list[int] = []

    def feed(self, data: bytes) -> None:
        now = time.monotonic_ns()
        for match in LINE.finditer(data) if b"data: " in data else _plain(data):
            self.latencies.append((now - int(match[1])) / 1e6)
            self.seen.append(int(match[2]))


PLAIN = re.compile(rb"t=(\d+) n=(\d+)")


def _plain(data: bytes) -> Any:
    return PLAIN.finditer(data)


async def read_into(reader: asyncio.StreamReader, timed: Timed, expect: int) -> None:
    tail = b""
    while len(timed.seen) < expect:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        data = tail + chunk
        cut = data.rfind(b"\n")
        timed.feed(data[: cut + 1])
        tail = data[cut + 1 :]


def write_paced(path: Path, start: int, plan: list[tuple[int, float]]) -> None:
    """Blocking writer (run in a thread): ``plan`` is (lines, pause after) steps."""
    n = start
    with open(path, "ab", buffering=0) as log:
        next_at = time.monotonic()
        for count, pause in plan:
            block = b"".join(b"t=%d n=%d\n" % (time.monotonic_ns(), n + i) for i in range(count))
            log.write(block)
            n += count
            next_at += pause
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)


async def latency(url: str, logs: Path) -> dict[str, dict[str, float]]:
    log = logs / "latency.log"
    log.write_bytes(b"")
    plan = [(1, 0.001)] * 2000 + [(20, 0.02)] * 100
    total = sum(count for count, _ in plan)
    reference = await asyncio.create_subprocess_exec(
        "tail", "-F", "-n0", str(log), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, preexec_fn=pin(0),
    )  # fmt: skip
    assert reference.stdout is not None
    reader, writer = await open_tail(url, "latency.log")
    await asyncio.sleep(0.5)  # tail -F has no "ready" signal; give it time to open the file
    ours, theirs = Timed(), Timed()
    readers = [
        asyncio.create_task(read_into(reader, ours, total)),
        asyncio.create_task(read_into(reference.stdout, theirs, total)),
    ]
    await asyncio.to_thread(write_paced, log, 0, plan)
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    writer.close()
    reference.kill()
    await reference.wait()
    results = {}
    for name, timed in (("streamer", ours), ("tail -F", theirs)):
        results[name] = {
            "lines": len(timed.seen),
            "in_order": timed.seen == list(range(total)),
            "p50_ms": percentile(timed.latencies, 50),
            "p99_ms": percentile(timed.latencies, 99),
            "max_ms": max(timed.latencies),
        }
    return results


async def count_lines(reader: asyncio.StreamReader, expect: int, check: bool) -> dict[str, Any]:
    seen = 0
    last = -1
    bad = 0
    tail = b""
    carry = b""  # "id: " may be split between two reads
    while seen < expect:
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        seen += (carry + chunk).count(b"id: ")
        carry = chunk[-3:]
        if check:
            data = tail + chunk
            cut = data.rfind(b"\n")
            for match in PLAIN.finditer(data[: cut + 1]):
                n = int(match[2])
                bad += n != last + 1
                last = n
            tail = data[cut + 1 :]
    return {"lines": seen, "out_of_order": bad, "done": time.monotonic()}


async def throughput(
    url: str, logs: Path, pid: int, subscribers: int, total: int
) -> dict[str, Any]:
    name = f"through-{subscribers}.log"
    log = logs / name
    log.write_bytes(b"")
    connections = [await open_tail(url, name) for _ in range(subscribers)]
    rss_before = rss(pid)
    counters = [
        asyncio.create_task(count_lines(reader, total, index == 0))
        for index, (reader, _) in enumerate(connections)
    ]
    cpu = cpu_seconds(pid)
    started = time.monotonic()
    plan = [(10_000, 0.0)] * (total // 10_000) + [(total % 10_000, 0.0)] * (total % 10_000 > 0)
    await asyncio.to_thread(write_paced, log, 0, plan)
    written = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*counters), 120)
    cpu = cpu_seconds(pid) - cpu
    delivered = sum(r["lines"] for r in results)
    for _, writer in connections:
        writer.close()
    slowest = max(r["done"] for r in results) - started
    return {
        "subscribers": subscribers,
        "lines": total,
        "write_s": round(written - started, 3),
        "deliver_s": round(slowest, 3),
        "lines_per_s_per_subscriber": round(total / slowest),
        "deliveries_per_s": round(total * subscribers / slowest),
        "complete": all(r["lines"] >= total for r in results),
        "out_of_order": results[0]["out_of_order"],
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss(pid) / 2**20, 1),
        "rss_peak_mb": round(rss(pid, "VmHWM") / 2**20, 1),
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_delivery": round(1e6 * cpu / max(1, delivered), 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=None,
        choices=SERVERS,
        help="default: streamer (and streamer-before with --before)",
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="an older checkout of this repository: adds streamer-before, run there",
    )
    args = parser.parse_args()
    if args.servers is None:
        args.servers = ["streamer", *(["streamer-before"] if args.before else [])]
    if "streamer-before" in args.servers:
        if not args.before:
            parser.error("streamer-before needs --before DIR")
        CWD["streamer-before"] = before_tree(args.before)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10_000), hard))
    os.sched_setaffinity(0, {1})
    report: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **git_commit(ROOT),
            "args": vars(args),
            "before": {"dir": str(CWD["streamer-before"]), **git_commit(CWD["streamer-before"])}
            if "streamer-before" in CWD
            else None,
        },
        "runs": {},
    }
    runs: dict[str, dict[str, Any]] = report["runs"]
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        for name in args.servers:
            print(f"{name}: latency, then {args.lines:,} lines to 1 and 100", file=sys.stderr)
            logs = Path(tmp) / name
            logs.mkdir()
            server, url = await start_server(name, logs)
            try:
                lat = await latency(url, logs)
                runs[name] = {
                    "command": COMMANDS[name],
                    "cwd": str(CWD.get(name, ROOT)),
                    "latency": lat["streamer"],
                    "latency_tail_f": lat["tail -F"],
                    "throughput": [
                        await throughput(url, logs, server.pid, n, args.lines) for n in (1, 100)
                    ],
                }
            finally:
                server.terminate()
                await server.wait()
    print("\n| server | lines | in order | p50 ms | p99 ms | max ms | tail -F p50 / p99 / max ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, run in runs.items():
        r, t = run["latency"], run["latency_tail_f"]
        print(f"| {name} | {r['lines']} | {r['in_order']} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | "
              f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} / {t['max_ms']:.2f} |")  # fmt: skip
    print("\n| server | subscribers | lines | lines/s per subscriber | deliveries/s | complete "
          "| out of order | RSS before -> after (peak) MB | srv CPU s "
          "| CPU µs/line delivered |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---|---:|---:|")
    for name, run in runs.items():
        for r in run["throughput"]:
            print(f"| {name} | {r['subscribers']} | {r['lines']:,} | "
                  f"{r['lines_per_s_per_subscriber']:,} | {r['deliveries_per_s']:,} | "
                  f"{r['complete']} | {r['out_of_order']} | "
                  f"{r['rss_before_mb']} -> {r['rss_after_mb']} ({r['rss_peak_mb']}) | "
                  f"{r['server_cpu_s']:.2f} | "
                  f"{r['cpu_us_per_delivery']:.3f} |")  # fmt: skip
    ours = runs.get("streamer")
    lines = []
    for other in ("streamer-before", *LOOP_VARIANTS):
        base = runs.get(other)
        if not (ours and base):
            continue
        tail = base["latency"]["p99_ms"] / max(1e-6, ours["latency"]["p99_ms"])
        parts = [f"latency p99 {other}/streamer x{tail:.2f}"]
        for mine, theirs in zip(ours["throughput"], base["throughput"], strict=True):
            rate = "lines_per_s_per_subscriber"
            speed = mine[rate] / max(1, theirs[rate])
            cost = mine["cpu_us_per_delivery"] / max(1e-6, theirs["cpu_us_per_delivery"])
            parts.append(
                f"{mine['subscribers']} subscriber(s): lines/s streamer/{other} x{speed:.2f}, "
                f"CPU per line delivered streamer/{other} x{cost:.2f}"
            )
        lines.append(f"- {'; '.join(parts)}")
    if lines:
        print("", *lines, sep="\n")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"logtail-{STARTED}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
