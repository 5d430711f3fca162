"""File delivery benchmark: streamer against aiohttp's ``add_static`` (and peers), side by side.

Makes a folder with a 4 KiB file, a 100 MB file and a 1 GiB file, then for
each server in turn (pinned to CPU 0; the clients pinned to CPU 1):

* ``small``: ``wrk -c64`` on the 4 KiB file, requests/s and latency;
* ``range``: ``wrk -c64`` on a 4 KiB ``Range`` in the middle of the 100 MB file;
* ``large``: ``curl`` downloading the 1 GiB file to /dev/null, best MB/s of 3.

Servers: ``streamer`` (defaults, access log on), ``streamer-quiet``
(``--log-level warning``: no access log), ``add_static`` and ``bare`` from
bench/baseline_static.py, and ``nginx`` (sendfile on, one worker) when it is
installed. Two more variants of streamer compare it with itself:
``streamer-before`` is the same command run in an older checkout
(``--before DIR``, e.g. a ``git worktree``; flags that code does not have are
left out) and ``streamer-asyncio`` / ``streamer-uvloop`` pin the event loop (``streamer``
runs its default, asyncio). ``--before`` adds
streamer-before to the default servers; pick any set with ``--servers``.

Each scenario is checked first (status and length) so an error page is never
measured. Around each measurement the server's CPU time (``/proc/PID/stat``
utime + stime, with its children: nginx's worker) is read, giving CPU µs per
request and CPU seconds per GiB. Prints a markdown table with ratios against
``add_static``, then streamer against streamer-before and the loop variants by
throughput and by CPU per unit of work, and writes JSON to bench/results/.

    python bench/files.py                       # everything, ~2 minutes
    python bench/files.py --duration 3 --servers streamer add_static
    python bench/files.py --before DIR --servers \
        streamer-asyncio streamer-before streamer-uvloop add_static
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from variants import (  # bench/ is on sys.path
    LOOP_VARIANTS,
    before_tree,
    clean_env,
    cpu_seconds,
    free_port,
    old_command,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
LISTENING = re.compile(r"listening on (http://[^\s)]+)")
RANGE_START = 50_000_000
RANGE = f"bytes={RANGE_START}-{RANGE_START + 4095}"
NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    types {{ application/octet-stream bin; }}
    client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
    uwsgi_temp_path {dir}; scgi_temp_path {dir};
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {media}/; }}
    }}
}}
"""


def make_media(folder: Path) -> None:
    block = os.urandom(1 << 20)
    (folder / "small.bin").write_bytes(block[:4096])
    for name, mib in (("medium.bin", 100), ("large.bin", 1024)):
        with open(folder / name, "wb") as out:
            for _ in range(mib):
                out.write(block)


def pin(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu})


STREAMERS = ["streamer", "streamer-before", *LOOP_VARIANTS, "streamer-quiet"]
CWD: dict[str, Path] = {}  # a server's working directory when not ROOT
COMMANDS: dict[str, list[str]] = {}  # what each server ran, for the JSON


@contextlib.contextmanager
def server(name: str, media: Path, work: Path) -> Iterator[tuple[str, int]]:
    """Start one server, yield (base URL, pid); always stopped on exit."""
    log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed below
    if name in STREAMERS:
        quiet = ["--log-level", "warning"] if name == "streamer-quiet" else []
        loop = LOOP_VARIANTS.get(name, [])
        port = free_port()
        cmd = [
            PYTHON,
            "-m",
            "streamer",
            "serve",
            "--media",
            str(media),
            "--port",
            str(port),
            *quiet,
            *loop,
        ]
        if name == "streamer-before":
            cmd, dropped = old_command(cmd, CWD[name])
            if dropped:
                print(f"{name}: {' '.join(dropped)} not in {CWD[name]}, left out", file=sys.stderr)
        url = f"http://127.0.0.1:{port}"
    elif name == "nginx":
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=work, port=port, media=media))
        cmd = ["nginx", "-c", str(conf), "-p", str(work)]
        url = f"http://127.0.0.1:{port}"
    else:
        port = free_port()
        mode = "static" if name == "add_static" else "bare"
        cmd = [PYTHON, str(HERE / "baseline_static.py"), "--media", str(media), "--port", str(port)]
        cmd += ["--mode", mode]
        url = f"http://127.0.0.1:{port}"
    COMMANDS[name] = cmd
    process = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=CWD.get(name, ROOT),
        env=clean_env(),
        preexec_fn=pin(0),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/files/small.bin", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log.name}") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def check(url: str, headers: dict[str, str], status: int, length: int) -> None:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    if response.status != status or len(body) != length:
        raise RuntimeError(f"{url} {headers}: {response.status} {len(body)} bytes")


def wrk(url: str, duration: float, headers: dict[str, str], pid: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", "-c64", f"-d{int(duration)}s", "--latency", url]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cpu = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=pin(1)).stdout
    cpu = cpu_seconds(pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {
        "rps": rps,
        "non_2xx": int(errors[1]) if errors else 0,
        "requests": requests,
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(1e6 * cpu / max(1, requests), 2),
    }
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
            result[f"p{pct}_ms"] = float(match[1]) * scale
    return result


def curl_speed(url: str, pid: int, runs: int = 3) -> dict[str, float]:
    speeds = []
    cpu = cpu_seconds(pid)
    for _ in range(runs):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=pin(1),
        ).stdout.split()
        if int(out[1]) != 1 << 30:
            raise RuntimeError(f"short download: {out}")
        speeds.append(float(out[0]) / 1e6)
    cpu = cpu_seconds(pid) - cpu
    return {
        "mb_s": max(speeds),
        "server_cpu_s": round(cpu, 3),
        "cpu_s_per_gib": round(cpu / runs, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["streamer", "streamer-quiet", "add_static", "bare", "nginx"]
    parser.add_argument(
        "--servers",
        nargs="+",
        default=None,
        choices=[*names, "streamer-before", *LOOP_VARIANTS],
        help=f"default: {' '.join(names)} (and streamer-before with --before)",
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="an older checkout of this repository: adds streamer-before, run there",
    )
    args = parser.parse_args()
    if args.servers is None:
        args.servers = [*names[:1], *(["streamer-before"] if args.before else []), *names[1:]]
    if "streamer-before" in args.servers:
        if not args.before:
            parser.error("streamer-before needs --before DIR")
        CWD["streamer-before"] = before_tree(args.before)
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    servers = [s for s in args.servers if s != "nginx" or shutil.which("nginx")]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run as an unprivileged user
        media = Path(tmp) / "media"
        media.mkdir()
        make_media(media)
        for name in servers:
            work = Path(tmp) / name
            work.mkdir()
            with server(name, media, work) as (url, pid):
                small, medium, large = (
                    f"{url}/files/{n}.bin" for n in ("small", "medium", "large")
                )
                check(small, {}, 200, 4096)
                check(medium, {"Range": RANGE}, 206, 4096)
                results[name] = {
                    "small": wrk(small, args.duration, {}, pid),
                    "range": wrk(medium, args.duration, {"Range": RANGE}, pid),
                }
                if name != "bare":
                    results[name]["large"] = curl_speed(large, pid)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
            results[name]["command"] = COMMANDS[name]
            results[name]["cwd"] = str(CWD.get(name, ROOT))
    report(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"files-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


def ratio(results: dict[str, dict[str, Any]], name: str, kind: str) -> str:
    """`` (xN.N)`` of ``name`` over add_static for ``kind``, or nothing."""
    base = results.get("add_static")
    if not base or name == "add_static":
        return ""
    return f" (x{results[name][kind]['rps'] / base[kind]['rps']:.1f})"


def report(results: dict[str, dict[str, Any]]) -> None:
    print(
        "\n| server | 4 KiB file req/s | p99 ms | CPU µs/req | 4 KiB range req/s | p99 ms "
        "| CPU µs/req | 1 GiB MB/s | CPU s/GiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        small, span = r["small"], r["range"]
        large = f"{r['large']['mb_s']:,.0f}" if "large" in r else "-"
        per_gib = f"{r['large']['cpu_s_per_gib']:.2f}" if "large" in r else "-"
        print(
            f"| {name} | {small['rps']:,.0f}{ratio(results, name, 'small')}"
            f" | {small.get('p99_ms', 0):.2f} | {small['cpu_us_per_request']:.1f}"
            f" | {span['rps']:,.0f}{ratio(results, name, 'range')} | {span.get('p99_ms', 0):.2f}"
            f" | {span['cpu_us_per_request']:.1f} | {large} | {per_gib} |"
        )
        for kind in ("small", "range"):
            if r[kind]["non_2xx"]:
                print(f"  ! {name} {kind}: {r[kind]['non_2xx']} non-2xx responses")
    ours = results.get("streamer")
    lines = []
    for other in ("add_static", "streamer-before", *LOOP_VARIANTS):
        base = results.get(other)
        if not (ours and base):
            continue
        parts = []
        for kind, label in (("small", "4 KiB file"), ("range", "4 KiB range")):
            speed = ours[kind]["rps"] / base[kind]["rps"]
            cost = ours[kind]["cpu_us_per_request"] / max(0.01, base[kind]["cpu_us_per_request"])
            parts.append(f"{label} req/s x{speed:.2f}, CPU/req x{cost:.2f}")
        if "large" in ours and "large" in base:
            speed = ours["large"]["mb_s"] / base["large"]["mb_s"]
            cost = ours["large"]["cpu_s_per_gib"] / max(0.001, base["large"]["cpu_s_per_gib"])
            parts.append(f"1 GiB MB/s x{speed:.2f}, CPU/GiB x{cost:.2f}")
        lines.append(f"- streamer/{other}: {'; '.join(parts)}")
    if lines:
        print("", *lines, sep="\n")


if __name__ == "__main__":
    main()
