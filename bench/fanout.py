"""SSE fan-out benchmark: streamer against the queue-per-subscriber aiohttp baseline, side by side.

For each subscriber count N, each server (streamer, then bench/baseline_queue.py)
is started in turn with the same settings, pinned to the first CPU; the load
client bench/sse_load.py runs as its own process pinned to the second CPU,
opens N subscriptions, publishes ~100-byte events at a fixed rate for a fixed
time and reports deliveries/s, publish-to-receive latency p50/p99/max, lost /
duplicated / late events, connections the server dropped, the server's RSS per
idle subscriber and the CPU both sides used. Prints a markdown table with the
ratios (streamer/baseline deliveries/s, baseline p99/streamer p99, server CPU
µs per delivery) and writes the raw results to bench/results/fanout-<timestamp>.json
(with the server logs next to it).

Two more variants of streamer compare it with itself: ``streamer-before`` is
the same command run in an older checkout (``--before DIR``, e.g. a
``git worktree``; flags that code does not have are left out), and
``streamer-asyncio`` / ``streamer-uvloop`` pin the event loop (``streamer``
runs its default, asyncio). ``--before`` adds
streamer-before to the default servers; pick any set with ``--servers``.

The default offered load is 1,000,000 deliveries/s (1000 ev/s to 1k
subscribers, 100 ev/s to 10k): far beyond what the baseline sustains, so its
deliveries/s is its maximum and its latency is mostly queueing. Events are
published over 16 keep-alive connections (``--publishers``); over a single
connection no two publishes reach the server in the same loop iteration, so
streamer's per-iteration coalescing never applies (try ``--publishers 1``).

    python bench/fanout.py                                              # 1k and 10k, ~2 minutes
    python bench/fanout.py --subscribers 200 --duration 3               # quick check
    python bench/fanout.py --subscribers 1000 10000 --rate 100 10       # unsaturated
    python bench/fanout.py --publishers 1                               # one publisher connection
    # + the old code (DIR: e.g. `git worktree add DIR <commit>`) and both loops, ~5 minutes:
    python bench/fanout.py --before DIR --servers \
        streamer-asyncio streamer-before streamer-uvloop baseline
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

STREAMER = [
    PYTHON,
    "-m",
    "streamer",
    "serve",
    "--port",
    "0",
    "--heartbeat",
    "60",
    "--max-buffer",
    "1048576",
    "--log-level",
    "info",  # the "listening on" line is logged at INFO
]
SERVERS: dict[str, list[str]] = {
    "streamer": STREAMER,
    "streamer-before": STREAMER,  # run in --before DIR, less the flags it lacks (see main)
    **{name: [*STREAMER, *flags] for name, flags in LOOP_VARIANTS.items()},
    "baseline": [PYTHON, str(HERE / "baseline_queue.py"), "--port", "0", "--log-level", "info"],
}
DEFAULT_SERVERS = ["streamer", "baseline"]  # plus streamer-before with --before
CWD: dict[str, Path] = {}  # a server's working directory when not ROOT
LISTENING = re.compile(r"listening on (http://[^\s)]+)")


def cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different allowed CPUs, or no pinning with fewer than two."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def server(name: str, log: Path, cpu: int | None) -> Iterator[tuple[str, int]]:
    """Start one server, yield (base URL, pid); always stopped on exit.

    Its output goes to ``log``: a pipe would need a reader competing for CPU.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            SERVERS[name],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=CWD.get(name, ROOT),
            env=clean_env(),
            preexec_fn=pin(cpu),
        )
    try:
        deadline = time.monotonic() + 20
        url = None
        while url is None:
            match = LISTENING.search(log.read_text(errors="replace"))
            if match is not None:
                url = match[1]
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start, see {log}")
            else:
                time.sleep(0.05)
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_client(
    url: str, pid: int, subscribers: int, rate: float, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    command = [
        PYTHON,
        str(HERE / "sse_load.py"),
        *("--url", url, "--server-pid", str(pid), "--subscribers", str(subscribers)),
        *("--rate", str(rate), "--duration", str(args.duration)),
        *("--drain-timeout", str(args.drain_timeout), "--payload", str(args.payload)),
        *("--publishers", str(args.publishers)),
        *(["--full-check"] if args.full_check else []),
    ]
    # Connecting is ~1 ms per subscriber at worst; everything else is bounded by the flags.
    timeout = 60 + subscribers / 100 + args.duration + 2 * args.drain_timeout
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=pin(cpu),
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"load client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print("   ", done.stderr.strip().splitlines()[-1], flush=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| server | subs | ev/s | offered/s | deliveries/s | delivered | p50 ms | p99 ms | max ms "
        "| lost | dup | late | dropped | KiB/idle sub | CPU srv/cli | srv CPU µs/delivery |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            rows.append(
                f"| {r['server']} | {r['subscribers']} | {r['rate']:g} | failed: "
                f"{r['error'].splitlines()[0][:80]} |" + " |" * 12
            )
            continue
        rows.append(
            f"| {r['server']} | {r['subscribers']:,} | {r['rate']:g} "
            f"| {r['offered_deliveries_per_s']:,} | {r['deliveries_per_s']:,} "
            f"| {r['delivered_pct']}% | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
            f"| {fmt(r['max_ms'])} | {r['lost']:,} | {r['duplicated']:,} "
            f"| {r['undelivered_late']:,} | {r['dropped_connections']:,} "
            f"| {r['rss_per_idle_subscriber_kib']:.2f} "
            f"| {r['server_cpu_pct']:.0f}% / {r['client_cpu_pct']:.0f}% "
            f"| {fmt(r.get('server_cpu_us_per_delivery'), 3)} |"
        )
    lines = [*rows, ""]
    by_key = {(r["server"], r["subscribers"], r["rate"]): r for r in runs if "error" not in r}
    for subs, rate in sorted({(r["subscribers"], r["rate"]) for r in runs}):
        ours = by_key.get(("streamer", subs, rate))
        for other in ("baseline", "streamer-before", *LOOP_VARIANTS):
            base = by_key.get((other, subs, rate))
            if not (ours and base):
                continue
            speedup = ours["deliveries_per_s"] / max(1, base["deliveries_per_s"])
            text = f"- {subs:,} subs x {rate:g} ev/s: deliveries/s streamer/{other} x{speedup:.2f}"
            if ours.get("server_cpu_us_per_delivery") and base.get("server_cpu_us_per_delivery"):
                cost = ours["server_cpu_us_per_delivery"] / base["server_cpu_us_per_delivery"]
                text += f", server CPU per delivery streamer/{other} x{cost:.2f}"
            if ours["p99_ms"] and base["p99_ms"]:
                text += f", p99 {other}/streamer x{base['p99_ms'] / ours['p99_ms']:.1f}"
            if ours["rss_per_idle_subscriber_kib"] and base["rss_per_idle_subscriber_kib"]:
                memory = ours["rss_per_idle_subscriber_kib"] / base["rss_per_idle_subscriber_kib"]
                text += f", RSS per idle subscriber streamer/{other} x{memory:.2f}"
            lines.append(text)
    notes = []
    for r in runs:
        if "error" in r:
            continue
        name = f"{r['server']} {r['subscribers']:,}x{r['rate']:g}"
        if r["client_cpu_pct"] >= 90:
            notes.append(
                f"- {name}: load client at {r['client_cpu_pct']:.0f}% CPU: may be the limit"
            )
        if r["undelivered_late"]:
            notes.append(
                f"- {name}: {r['undelivered_late']:,} deliveries still pending after the "
                f"drain timeout (server behind); its latency counts only what arrived"
            )
        if r["lost"] or r["duplicated"] or r["dropped_connections"] or r["bad_streams"]:
            notes.append(
                f"- {name}: lost {r['lost']}, duplicated {r['duplicated']}, dropped "
                f"{r['dropped_connections']}, unparsable streams {r['bad_streams']}"
            )
        if not r["publish_all_answered"]:
            notes.append(
                f"- {name}: {r['publish_answered']:,} of {r['publish_sent']:,} publishes answered "
                "by the end (POSTs wait behind the fan-out too)"
            )
        if r["publish_failed"] or r["publish_errors"]:
            notes.append(
                f"- {name}: {r['publish_failed']} publishes failed: {r['publish_errors'][:2]}"
            )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def rates_for(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[float]:
    subscribers: list[int] = args.subscribers
    if args.rate is None:
        return [args.offered / n for n in subscribers]
    rates: list[float] = args.rate
    if len(rates) == 1:
        return rates * len(subscribers)
    if len(rates) != len(subscribers):
        parser.error("give one --rate, or one per --subscribers value")
    return rates


def metadata(args: argparse.Namespace) -> dict[str, Any]:
    versions = subprocess.run(
        [PYTHON, "-c", "import aiohttp, sys; print(aiohttp.__version__, sys.version.split()[0])"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **git_commit(ROOT),
        "aiohttp": versions[0] if versions else None,
        "python": versions[1] if len(versions) > 1 else None,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pinning": dict(zip(("server", "client"), cpus(), strict=True)),
        "args": vars(args),
        "servers": {name: SERVERS[name] for name in args.servers},
        "cwd": {name: str(CWD.get(name, ROOT)) for name in args.servers},
        "before": {"dir": str(CWD["streamer-before"]), **git_commit(CWD["streamer-before"])}
        if "streamer-before" in CWD
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=None,
        help="events/s: one for all subscriber counts, or one per count "
        "(default: --offered / subscribers)",
    )
    parser.add_argument(
        "--offered",
        type=float,
        default=1_000_000,
        help="deliveries/s offered when --rate is not given (default 1M)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per event")
    parser.add_argument(
        "--publishers",
        type=int,
        default=16,
        help="publisher connections (1: no two events reach the server in one loop iteration)",
    )
    parser.add_argument(
        "--full-check", action="store_true", help="every subscriber checks every event id"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=None,
        choices=list(SERVERS),
        help=f"default: {' '.join(DEFAULT_SERVERS)} (and streamer-before with --before)",
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="an older checkout of this repository: adds streamer-before, run there",
    )
    args = parser.parse_args()
    rates = rates_for(args, parser)
    if args.servers is None:
        args.servers = list(DEFAULT_SERVERS)
        if args.before:
            args.servers.insert(1, "streamer-before")
    if "streamer-before" in args.servers:
        if not args.before:
            parser.error("streamer-before needs --before DIR")
        CWD["streamer-before"] = before_tree(args.before)
        SERVERS["streamer-before"], dropped = old_command(STREAMER, CWD["streamer-before"])
        if dropped:
            print(f"streamer-before: {' '.join(dropped)} not in {args.before}, left out")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fanout-{stamp}.json"
    server_cpu, client_cpu = cpus()
    report: dict[str, Any] = {"meta": metadata(args), "runs": []}
    runs: list[dict[str, Any]] = report["runs"]
    for subscribers, rate in zip(args.subscribers, rates, strict=True):
        for name in args.servers:
            print(f"{name}: {subscribers:,} subscribers, {rate:g} ev/s", flush=True)
            log = RESULTS / f"fanout-{stamp}-{name}-{subscribers}.log"
            try:
                with server(name, log, server_cpu) as (url, pid):
                    result = run_client(url, pid, subscribers, rate, args, client_cpu)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as exc:
                print(f"    failed: {exc}", flush=True)
                result = {"subscribers": subscribers, "rate": rate, "error": str(exc)}
            result["server"] = name
            if "server_cpu_s" in result:
                per = result["server_cpu_s"] / max(1, result["deliveries"])
                result["server_cpu_us_per_delivery"] = round(per * 1e6, 3)
            result["server_log"] = str(log.relative_to(ROOT))
            runs.append(result)
            out.write_text(json.dumps(report, indent=2))  # partial results survive a crash
    print()
    print(
        f"{args.duration:g} s of ~{args.payload}-byte events over {args.publishers} publisher "
        f"connection(s); server on CPU {server_cpu}, load client on CPU {client_cpu}\n"
    )
    print(table(runs))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
