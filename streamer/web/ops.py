"""Operational endpoints: ``GET /healthz`` and ``GET /metrics``."""

from __future__ import annotations

import os
import time

from aiohttp import web

from .. import __version__
from .formats import json_line
from .keys import BROKER, EVENTS_FANOUT, LOG_HUB, SMALL_FILES, STARTED_AT, UNSENT


async def healthz(request: web.Request) -> web.Response:
    health = request.app[BROKER].health()
    return web.json_response(
        {
            "status": "ok" if health.ok else "degraded",
            "version": __version__,
            "uptime": round(time.monotonic() - request.app[STARTED_AT], 3),
            "pid": os.getpid(),
            "subscribers": len(request.app[EVENTS_FANOUT]),
            "broker": {"kind": health.kind, "state": health.state},
        },
        dumps=json_line,
    )


def open_fds() -> int:
    """Open file descriptors of this process (-1 where /proc is not available)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format, version 0.0.4."""
    fanout = request.app[EVENTS_FANOUT]
    hub = request.app[LOG_HUB]
    stats = fanout.stats
    unsent = request.app[UNSENT]
    samples = [
        ("streamer_subscribers", "gauge", "Open SSE streams.", len(fanout)),
        ("streamer_events_published_total", "counter", "Events published.", stats.published),
        (
            "streamer_events_delivered_total",
            "counter",
            "Event deliveries (events x subscribers).",
            stats.delivered,
        ),
        (
            "streamer_subscribers_dropped_total",
            "counter",
            "Subscribers cut because their unsent data passed the bound.",
            stats.dropped_slow,
        ),
        ("streamer_bytes_sent_total", "counter", "Live event bytes written.", stats.bytes_sent),
        (
            "streamer_unsent_bytes",
            "gauge",
            "Bytes written to lagging streams and not read yet (bounded by --max-unsent).",
            unsent.total,
        ),
        (
            "streamer_unsent_cuts_total",
            "counter",
            "Streams cut because the server-wide unsent budget was exhausted.",
            unsent.cuts,
        ),
        ("streamer_open_files", "gauge", "File descriptors open in this process.", open_fds()),
        ("streamer_log_tailers", "gauge", "Log files being followed.", len(hub.feeds)),
        ("streamer_log_subscribers", "gauge", "Open log tail streams.", len(hub.fanout)),
        ("streamer_log_polls_total", "counter", "Reads of followed log files.", hub.polls),
        (
            "streamer_small_files_cached",
            "gauge",
            "Small files served from memory.",
            len(request.app[SMALL_FILES]),
        ),
    ]
    lines = []
    for name, kind, help_text, value in samples:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
