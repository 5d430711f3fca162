"""File delivery benchmark: streamer against aiohttp's ``add_static`` (and peers), side by side.

Makes a folder with a 4 KiB file, a 100 MB file and a 1 GiB file, then for
each server in turn (pinned to CPU 0; the clients pinned to CPU 1):

* ``small``: ``wrk -c64`` on the 4 KiB file, requests/s and latency;
* ``range``: ``wrk -c64`` on a 4 KiB ``Range`` in the middle of the 100 MB file;
* ``large``: ``curl`` downloading the 1 GiB file to /dev/null, best MB/s of 3.

Servers: ``streamer`` (defaults, access log on), ``streamer-quiet``
(``--log-level warning``: no access log), ``add_static`` and ``bare`` from
bench/baseline_static.py, and ``nginx`` (sendfile on, one worker) when it is
installed. Each scenario is checked first (status and length) so an error
page is never measured. Prints a markdown table with ratios against
``add_static`` and writes JSON to bench/results/.

    python bench/files.py                       # everything, ~2 minutes
    python bench/files.py --duration 3 --servers streamer add_static
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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(name: str, media: Path, work: Path) -> Iterator[str]:
    log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed below
    if name.startswith("streamer"):
        quiet = ["--log-level", "warning"] if name == "streamer-quiet" else []
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
        ]
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
    process = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pin(0)
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
        yield url
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


def wrk(url: str, duration: float, headers: dict[str, str]) -> dict[str, float]:
    cmd = ["wrk", "-t1", "-c64", f"-d{int(duration)}s", "--latency", url]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=pin(1)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {"rps": rps, "non_2xx": int(errors[1]) if errors else 0}
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
            result[f"p{pct}_ms"] = float(match[1]) * scale
    return result


def curl_speed(url: str, runs: int = 3) -> dict[str, float]:
    speeds = []
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
    return {"mb_s": max(speeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["streamer", "streamer-quiet", "add_static", "bare", "nginx"]
    parser.add_argument("--servers", nargs="+", default=names, choices=names)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    args = parser.parse_args()
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
            with server(name, media, work) as url:
                small, medium, large = (
                    f"{url}/files/{n}.bin" for n in ("small", "medium", "large")
                )
                check(small, {}, 200, 4096)
                check(medium, {"Range": RANGE}, 206, 4096)
                results[name] = {
                    "small": wrk(small, args.duration, {}),
                    "range": wrk(medium, args.duration, {"Range": RANGE}),
                }
                if name != "bare":
                    results[name]["large"] = curl_speed(large)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
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
    print("\n| server | 4 KiB file req/s | p99 ms | 4 KiB range req/s | p99 ms | 1 GiB MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        small, span = r["small"], r["range"]
        large = f"{r['large']['mb_s']:,.0f}" if "large" in r else "-"
        print(
            f"| {name} | {small['rps']:,.0f}{ratio(results, name, 'small')}"
            f" | {small.get('p99_ms', 0):.2f}"
            f" | {span['rps']:,.0f}{ratio(results, name, 'range')} | {span.get('p99_ms', 0):.2f}"
            f" | {large} |"
        )
        for kind in ("small", "range"):
            if r[kind]["non_2xx"]:
                print(f"  ! {name} {kind}: {r[kind]['non_2xx']} non-2xx responses")


if __name__ == "__main__":
    main()
