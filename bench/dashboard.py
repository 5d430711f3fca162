"""Dashboard benchmark: the log view while 100,000 lines arrive at full speed, and the first
paint of ``/``; streamer's page beside frontail's (a log viewer people run for exactly
this, ``npm install frontail``), in one run, in the same headless Chromium.

For each viewer, on a fresh log file that it follows from its end:

* a ``requestAnimationFrame`` loop in the page records every frame's gap from the moment
  the first line is written until the last one is on the page;
* the lines (~110 bytes, every tenth with ANSI colours, the last ending in ``END n``) are
  appended in chunks of 1,000 as fast as this script can write;
* **lines/s** is the count over the time from the first write to the last line shown;
  **responsive** means no frame gap of 100 ms or more (the longest and the 99th
  percentile are reported); the page's JS heap and DOM node count come from the DevTools
  protocol (``Performance.getMetrics``) once all lines are in; CPU seconds (utime +
  stime from /proc, each process with its descendants) of the server and of the browser
  over the same span, per 100,000 lines;
* **first paint**: the median ``first-contentful-paint`` of ``/`` over 10 fresh browser
  contexts (nothing cached).

    python bench/dashboard.py                              # streamer only, ~30 s
    python bench/dashboard.py --frontail /tmp/peers/node_modules/.bin/frontail
    python bench/dashboard.py --lines 300000 --runs 3

Prints a markdown table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright
from variants import PYTHON, clean_env, cpu_seconds, free_port, git_commit  # bench/ is on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CHROMIUM = os.environ.get("STREAMER_CHROMIUM", "/usr/bin/chromium")
CHUNK = 1000  # lines per write
# no initial lines, as many rows kept as streamer's page keeps, no usage reports
FRONTAIL_FLAGS = ("--number", "0", "--lines", "1500", "--disable-usage-stats")
LISTENING = re.compile(r"listening on (http://[^\s)]+)")


@dataclass
class Viewer:
    name: str
    url: str  # the page that follows the log
    root: str  # the page whose first paint is measured
    pid: int
    ready: str  # JS expression: the page follows the log now
    last_row: str  # JS expression: the text of the last line on the page


@contextlib.contextmanager
def streamer(logs: Path) -> Iterator[Viewer]:
    command = [PYTHON, "-m", "streamer", "serve", "--port", "0", "--logs", str(logs)]
    command += ["--media", str(ROOT / "media")]
    process = subprocess.Popen(
        command, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        url = None
        while url is None:
            line = process.stdout.readline().decode()
            if not line:
                sys.exit("streamer did not start")
            match = LISTENING.search(line)
            url = match[1] if match else None
        subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)  # drain
        yield Viewer(
            "streamer",
            f"{url}/#/logs/app.log?tail=100",
            f"{url}/",
            process.pid,
            "document.querySelector('.conn')?.dataset.state === 'connected'",
            "document.querySelector('.log')?.lastElementChild?.textContent ?? ''",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


@contextlib.contextmanager
def frontail(command: str, logs: Path) -> Iterator[Viewer]:
    port = free_port()
    process = subprocess.Popen(
        [
            command,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            *FRONTAIL_FLAGS,
            str(logs / "app.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                sys.exit("frontail did not start")
            time.sleep(0.05)
        yield Viewer(
            "frontail",
            f"{url}/",
            f"{url}/",
            process.pid,
            # its socket.io client is connected once the server sent the options
            "!!(window.io && document.querySelector('.log'))",
            "document.querySelector('.log')?.lastElementChild?.textContent ?? ''",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def browser_pid(exclude: set[int]) -> int:
    """The Chromium browser process Playwright started (the root of its process tree)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"--remote-debugging-pipe" in cmdline and b"--type=" not in cmdline:
                found.append(int(entry.name))
    assert len(found) == 1, found
    return found[0]


FRAME_WATCH = """() => {
  window.__gaps = [];
  let last = performance.now();
  const tick = (now) => {
    window.__gaps.push(now - last);
    last = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def line(n: int) -> str:
    text = f"2026-12-03T12:00:00.{n % 1_000_000:06d} worker-{n % 8} GET /api/items/{n} 200"
    if n % 10 == 0:
        text = f"\x1b[1;31mERROR\x1b[0m {text} \x1b[33mslow\x1b[0m"
    else:
        text = f"INFO {text} in {n % 97} ms"
    return f"{text} END {n}\n"


def follow_burst(browser: Browser, viewer: Viewer, log: Path, count: int) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(viewer.url)
    page.wait_for_function(f"() => {viewer.ready}", timeout=15_000)
    page.wait_for_timeout(300)  # settled: nothing of the start in the measured span
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.evaluate(FRAME_WATCH)
    browser_root = browser_pid(set())
    server_cpu, browser_cpu = cpu_seconds(viewer.pid), cpu_seconds(browser_root)
    started = time.perf_counter()
    with open(log, "a") as out:
        for first in range(0, count, CHUNK):
            out.write("".join(line(n) for n in range(first, min(count, first + CHUNK))))
            out.flush()
    written = time.perf_counter() - started
    last, seen_at = wait_for_last_line(page, viewer, count)
    elapsed = seen_at - started
    complete = last == count - 1
    server_cpu = cpu_seconds(viewer.pid) - server_cpu
    browser_cpu = cpu_seconds(browser_root) - browser_cpu
    gaps = page.evaluate("window.__gaps")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    result = measured(gaps, page)
    context.close()
    per = 100_000 / count
    return {
        "lines": count,
        "write_s": round(written, 3),
        "complete": complete,
        "last_line_shown": last,
        "seconds": round(elapsed, 3),  # to the last line shown
        "lines_per_s": round((last + 1) / elapsed),
        **result,
        "js_heap_mb": round(metrics["JSHeapUsedSize"] / 1e6, 1),
        "dom_nodes": int(metrics["Nodes"]),
        "server_cpu_per_100k": round(server_cpu * per, 2),
        "browser_cpu_per_100k": round(browser_cpu * per, 2),
    }


def wait_for_last_line(
    page: Page, viewer: Viewer, count: int, stall: float = 10
) -> tuple[int, float]:
    """Until the page shows line ``count - 1``, asked every 10 ms from here (a poll inside
    the page would cost the page time it is being measured on). Returns the number of the
    last line shown and when it was first seen (``time.perf_counter()``): less than
    ``count - 1`` when nothing new came for ``stall`` seconds (lost, or a page too busy
    to show more)."""
    last_shown = -1
    progressed = time.monotonic()
    while True:
        text = page.evaluate(f"() => {viewer.last_row}")
        found = re.search(r"END (\d+)", text)
        shown = int(found[1]) if found else -1
        if shown != last_shown:
            last_shown, progressed = shown, time.perf_counter()
        if shown == count - 1:
            return shown, progressed
        if time.perf_counter() - progressed > stall:
            print(f"{viewer.name}: stuck at line {shown} of {count}", file=sys.stderr)
            return shown, progressed
        time.sleep(0.01)


def measured(gaps: list[float], page: Page) -> dict[str, Any]:
    gaps = sorted(gaps) or [0.0]
    return {
        "frames": len(gaps),
        "gap_max_ms": round(gaps[-1], 1),
        "gap_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 1),
        "gaps_over_100ms": sum(1 for gap in gaps if gap >= 100),
        "rows": page.evaluate("document.querySelector('.log').childElementCount"),
    }


def first_paint(browser: Browser, viewer: Viewer, times: int = 10) -> float:
    paints = []
    for _ in range(times):
        context = browser.new_context()
        page = context.new_page()
        page.goto(viewer.root)
        paint = page.wait_for_function(
            "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
        ).json_value()
        paints.append(float(paint))
        context.close()
    return round(statistics.median(paints), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1, help="bursts per viewer (alternating)")
    parser.add_argument("--frontail", help="frontail's command, to run it beside streamer")
    args = parser.parse_args()
    viewers = ["streamer"] + (["frontail"] if args.frontail else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in viewers}
    paints: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for _run in range(args.runs):
            for name in viewers:
                with tempfile.TemporaryDirectory() as folder:
                    logs = Path(folder)
                    (logs / "app.log").write_bytes(b"")
                    opened = streamer(logs) if name == "streamer" else frontail(args.frontail, logs)
                    with opened as viewer:
                        results[name].append(
                            follow_burst(browser, viewer, logs / "app.log", args.lines)
                        )
                        if name not in paints:
                            paints[name] = first_paint(browser, viewer)
                print(name, results[name][-1], file=sys.stderr)
        browser.close()
    report(results, paints, args)


def report(
    results: dict[str, list[dict[str, Any]]], paints: dict[str, float], args: argparse.Namespace
) -> None:
    keys = [
        ("lines_per_s", "lines/s shown"),
        ("last_line_shown", "last line shown"),
        ("gap_max_ms", "longest frame gap (ms)"),
        ("gap_p99_ms", "p99 frame gap (ms)"),
        ("gaps_over_100ms", "gaps >= 100 ms"),
        ("rows", "rows on the page"),
        ("dom_nodes", "DOM nodes"),
        ("js_heap_mb", "JS heap (MB)"),
        ("server_cpu_per_100k", "server CPU s / 100k lines"),
        ("browser_cpu_per_100k", "browser CPU s / 100k lines"),
    ]
    names = list(results)
    print(f"\n{args.lines:,} lines at full speed, median of {args.runs} run(s)\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key, label in keys:
        values = [statistics.median(run[key] for run in results[name]) for name in names]
        print(f"| {label} | " + " | ".join(f"{value:,}" for value in values) + " |")
    print(
        "| first paint of / (ms, median of 10) | "
        + " | ".join(str(paints[n]) for n in names)
        + " |"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "commit": git_commit(ROOT),
                "args": vars(args),
                "results": results,
                "first_paint_ms": paints,
            },
            indent=1,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
