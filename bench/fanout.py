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

Two more run streamer on the Redis broker (issue 12): ``streamer-redis`` (one
process, ``--broker redis://...``) and ``streamer-redis-2w`` (``--workers 2``:
a supervisor and two worker processes on one port). The bench starts a
redis-server of its own on a free loopback port (no persistence, in a temporary
directory; flushed, and a fresh ``--redis-prefix``, for every run) and stops it
at the end. Server CPU and RSS are summed over the process started and all its
descendants; redis-server's CPU is reported beside it, and with it in "CPU s per
million deliveries (server+redis)". redis-server shares the server's CPU. Two
workers pinned to one CPU could not run in parallel, so ``--multi-pin`` says
where the 2-worker variant goes: ``free`` (default: server and redis-server
unpinned, the load client still on its CPU), ``server`` (everything on the
server's CPU: the cost of the split, not its gain) or ``none`` (nothing pinned,
the client neither). The table shows the pinning of every run.

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
    # the Redis broker, one process and two workers, beside the memory broker:
    python bench/fanout.py --subscribers 10000 --rate 100 \
        --servers streamer streamer-redis streamer-redis-2w
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
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from variants import (  # bench/ is on sys.path
    LOOP_VARIANTS,
    REDIS_SERVER,
    RedisServer,
    before_tree,
    clean_env,
    git_commit,
    kill_leftovers,
    old_command,
    process_tree,
    redis_command,
    set_affinity,
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
# filled in for each run: the bench's own redis-server, and a prefix no other run used
REDIS = ["--broker", "{redis_url}", "--redis-prefix", "{redis_prefix}"]
SERVERS: dict[str, list[str]] = {
    "streamer": STREAMER,
    "streamer-before": STREAMER,  # run in --before DIR, less the flags it lacks (see main)
    **{name: [*STREAMER, *flags] for name, flags in LOOP_VARIANTS.items()},
    "streamer-redis": [*STREAMER, *REDIS],
    "streamer-redis-2w": [*STREAMER, *REDIS, "--workers", "2"],
    "baseline": [PYTHON, str(HERE / "baseline_queue.py"), "--port", "0", "--log-level", "info"],
}
DEFAULT_SERVERS = ["streamer", "baseline"]  # plus streamer-before with --before
CWD: dict[str, Path] = {}  # a server's working directory when not ROOT
# with --workers, the supervisor's line, once every worker listens (theirs say "serving")
LISTENING = re.compile(r"listening on (http://[^\s)]+)")


def cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different allowed CPUs, or no pinning with fewer than two."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def uses_redis(name: str) -> bool:
    return "{redis_url}" in SERVERS[name]


def workers(name: str) -> int:
    command = SERVERS[name]
    return int(command[command.index("--workers") + 1]) if "--workers" in command else 1


def placement(name: str, multi_pin: str) -> dict[str, int | None]:
    """The CPU of the server (and all its processes), its redis-server and the load
    client for one run; None: not pinned."""
    server_cpu, client_cpu = cpus()
    redis_cpu = server_cpu if uses_redis(name) else None
    if workers(name) > 1 and multi_pin != "server":
        server_cpu = redis_cpu = None
        if multi_pin == "none":
            client_cpu = None
    return {"server": server_cpu, "redis": redis_cpu, "client": client_cpu}


def pinning_text(where: dict[str, int | None], redis: bool) -> str:
    def cpu(value: int | None) -> str:
        return "any" if value is None else str(value)

    redis_text = cpu(where["redis"]) if redis else "-"
    return f"{cpu(where['server'])}/{redis_text}/{cpu(where['client'])}"


@contextlib.contextmanager
def server(name: str, log: Path, cpu: int | None, command: list[str]) -> Iterator[tuple[str, int]]:
    """Start one server, yield (base URL, pid); always stopped on exit, with every process
    it started (``--workers``).

    Its output goes to ``log``: a pipe would need a reader competing for CPU.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
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
        family = process_tree(process.pid)  # workers too: a supervisor killed leaves them
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        time.sleep(0.1)
        if killed := kill_leftovers(family):
            print(f"    killed {name}'s processes left running: {killed}", flush=True)


def run_client(
    url: str,
    pid: int,
    subscribers: int,
    rate: float,
    args: argparse.Namespace,
    cpu: int | None,
    redis_pid: int | None = None,
) -> dict[str, Any]:
    command = [
        PYTHON,
        str(HERE / "sse_load.py"),
        *("--url", url, "--server-pid", str(pid), "--subscribers", str(subscribers)),
        *(("--redis-pid", str(redis_pid)) if redis_pid else ()),
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
        "| server | pin srv/redis/cli | subs | ev/s | offered/s | deliveries/s | delivered "
        "| p50 ms | p99 ms | max ms | lost | dup | late | dropped | KiB/idle sub "
        "| CPU srv/redis/cli | srv CPU µs/delivery | CPU s/M deliveries (srv+redis) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            rows.append(
                f"| {r['server']} | {r.get('pinning_text', '-')} | {r['subscribers']} "
                f"| {r['rate']:g} | failed: {r['error'].splitlines()[0][:80]} |" + " |" * 13
            )
            continue
        redis_pct = f"{r['redis_cpu_pct']:.0f}%" if "redis_cpu_pct" in r else "-"
        rows.append(
            f"| {r['server']} | {r['pinning_text']} | {r['subscribers']:,} | {r['rate']:g} "
            f"| {r['offered_deliveries_per_s']:,} | {r['deliveries_per_s']:,} "
            f"| {r['delivered_pct']}% | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
            f"| {fmt(r['max_ms'])} | {r['lost']:,} | {r['duplicated']:,} "
            f"| {r['undelivered_late']:,} | {r['dropped_connections']:,} "
            f"| {r['rss_per_idle_subscriber_kib']:.2f} "
            f"| {r['server_cpu_pct']:.0f}% / {redis_pct} / {r['client_cpu_pct']:.0f}% "
            f"| {fmt(r.get('server_cpu_us_per_delivery'), 3)} "
            f"| {fmt(r.get('total_cpu_s_per_million'), 3)} |"
        )
    lines = [*rows, ""]
    by_key = {(r["server"], r["subscribers"], r["rate"]): r for r in runs if "error" not in r}
    pairs = [
        *(("streamer", other) for other in ("baseline", "streamer-before", *LOOP_VARIANTS)),
        ("streamer-redis", "streamer"),
        ("streamer-redis-2w", "streamer-redis"),
    ]
    for subs, rate in sorted({(r["subscribers"], r["rate"]) for r in runs}):
        for mine, other in pairs:
            ours, base = by_key.get((mine, subs, rate)), by_key.get((other, subs, rate))
            if not (ours and base):
                continue
            speedup = ours["deliveries_per_s"] / max(1, base["deliveries_per_s"])
            text = f"- {subs:,} subs x {rate:g} ev/s: deliveries/s {mine}/{other} x{speedup:.2f}"
            if ours.get("server_cpu_us_per_delivery") and base.get("server_cpu_us_per_delivery"):
                cost = ours["server_cpu_us_per_delivery"] / base["server_cpu_us_per_delivery"]
                text += f", server CPU per delivery {mine}/{other} x{cost:.2f}"
            if ours.get("total_cpu_s_per_million") and base.get("total_cpu_s_per_million"):
                cost = ours["total_cpu_s_per_million"] / base["total_cpu_s_per_million"]
                text += f" (with redis x{cost:.2f})"
            if ours["p99_ms"] and base["p99_ms"]:
                text += f", p99 {other}/{mine} x{base['p99_ms'] / ours['p99_ms']:.1f}"
            if ours["rss_per_idle_subscriber_kib"] and base["rss_per_idle_subscriber_kib"]:
                memory = ours["rss_per_idle_subscriber_kib"] / base["rss_per_idle_subscriber_kib"]
                text += f", RSS per idle subscriber {mine}/{other} x{memory:.2f}"
            lines.append(text)
    notes = [
        "- pin srv/redis/cli: the CPU of the server (all its processes), of redis-server and "
        "of the load client; any: not pinned. srv CPU µs/delivery (server only) is the same "
        "unit as CPU s per million deliveries, which adds redis-server's CPU",
    ]
    for r in runs:
        if "error" in r:
            continue
        name = f"{r['server']} {r['subscribers']:,}x{r['rate']:g}"
        if r["client_cpu_pct"] >= 90:
            notes.append(
                f"- {name}: load client at {r['client_cpu_pct']:.0f}% CPU: may be the limit"
            )
        processes = r.get("server_processes", [1, 1])
        fds = r.get("open_fds_idle", {})
        if processes[0] > 1 or processes != [processes[0]] * 2:
            spread = " / ".join(f"{n:,}" for n in fds.values())
            notes.append(
                f"- {name}: {processes[0]} server processes at the start, {processes[1]} at the "
                f"end; open files per process with every subscriber connected: {spread}"
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
        "pinning": {name: placement(name, args.multi_pin) for name in args.servers},
        "redis_server": subprocess.run(
            [REDIS_SERVER, "--version"], capture_output=True, text=True
        ).stdout.strip()
        if any(uses_redis(name) for name in args.servers)
        else None,
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
    parser.add_argument(
        "--multi-pin",
        choices=["free", "server", "none"],
        default="free",
        help="where a server with several workers runs: free (server and redis unpinned, "
        "load client on its CPU), server (all on the server's CPU), none (nothing pinned)",
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

    signal.signal(signal.SIGTERM, stopped)  # clean up as after Ctrl-C
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fanout-{stamp}.json"
    report: dict[str, Any] = {"meta": metadata(args), "runs": []}
    runs: list[dict[str, Any]] = report["runs"]
    with contextlib.ExitStack() as cleanup:
        redis = None
        if any(uses_redis(name) for name in args.servers):
            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fanout-"))
            redis = RedisServer(Path(directory), log=RESULTS / f"fanout-{stamp}-redis.log")
            cleanup.enter_context(redis)
            print(f"redis-server on {redis.url} (pid {redis.pid}, no persistence)", flush=True)
        for subscribers, rate in zip(args.subscribers, rates, strict=True):
            for name in args.servers:
                runs.append(one_run(name, subscribers, rate, args, stamp, redis))
                out.write_text(json.dumps(report, indent=2))  # partial results survive a crash
    print()
    print(
        f"{args.duration:g} s of ~{args.payload}-byte events over {args.publishers} publisher "
        f"connection(s); --multi-pin {args.multi_pin}\n"
    )
    print(table(runs))
    print(f"\nraw results: {out.relative_to(ROOT)}")


def one_run(
    name: str,
    subscribers: int,
    rate: float,
    args: argparse.Namespace,
    stamp: str,
    redis: RedisServer | None,
) -> dict[str, Any]:
    where = placement(name, args.multi_pin)
    text = pinning_text(where, uses_redis(name))
    print(
        f"{name}: {subscribers:,} subscribers, {rate:g} ev/s, pin srv/redis/cli {text}",
        flush=True,
    )
    log = RESULTS / f"fanout-{stamp}-{name}-{subscribers}.log"
    values = {}
    redis_pid = None
    if uses_redis(name):
        assert redis is not None
        redis_command(redis.port, "FLUSHALL")  # nothing of the runs before
        cpu = where["redis"]
        set_affinity(redis.pid, {cpu} if cpu is not None else os.sched_getaffinity(0))
        prefix = f"fanout-{stamp}-{name}-{subscribers}-{rate:g}"
        values = {"redis_url": redis.url, "redis_prefix": prefix}
        redis_pid = redis.pid
    command = [token.format(**values) if "{" in token else token for token in SERVERS[name]]
    try:
        with server(name, log, where["server"], command) as (url, pid):
            result = run_client(url, pid, subscribers, rate, args, where["client"], redis_pid)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as exc:
        print(f"    failed: {exc}", flush=True)
        result = {"subscribers": subscribers, "rate": rate, "error": str(exc)}
    result["server"] = name
    result["command"] = command
    result["pinning"] = where
    result["pinning_text"] = text
    if "server_cpu_s" in result:
        deliveries = max(1, result["deliveries"])
        result["server_cpu_us_per_delivery"] = round(result["server_cpu_s"] / deliveries * 1e6, 3)
        total = result["server_cpu_s"] + result.get("redis_cpu_s", 0.0)
        result["total_cpu_s_per_million"] = round(total / deliveries * 1e6, 3)
    result["server_log"] = str(log.relative_to(ROOT))
    return result


def stopped(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
