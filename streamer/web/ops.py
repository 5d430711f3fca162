"""Operational endpoints: ``GET /healthz`` and ``GET /metrics``."""

from __future__ import annotations

import os
import time
from typing import Final

from aiohttp import web

from .. import __version__
from .formats import json_line
from .keys import BROKER, EVENTS_FANOUT, LOG_HUB, SMALL_FILES, STARTED_AT, UNSENT, WORKER


async def healthz(request: web.Request) -> web.Response:
    health = request.app[BROKER].health()
    return web.json_response(
        {
            "status": "ok" if health.ok else "degraded",
            "version": __version__,
            "uptime": round(time.monotonic() - request.app[STARTED_AT], 3),
            "pid": os.getpid(),
            **({"worker": request.app[WORKER]} if WORKER in request.app else {}),
            "subscribers": len(request.app[EVENTS_FANOUT]),
            "broker": {
                "kind": health.kind,
                "state": health.state,
                **({"detail": health.detail} if health.detail else {}),
                **health.counters,
            },
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
    health = request.app[BROKER].health()
    samples.append(("streamer_broker_up", "gauge", "1 while the broker is ok.", int(health.ok)))
    for counter, value in health.counters.items():
        if counter in BROKER_SAMPLES:
            samples.append((*BROKER_SAMPLES[counter], value))
    # with --workers, each answers for itself: the label keeps their series apart
    label = f'{{worker="{request.app[WORKER]}"}}' if WORKER in request.app else ""
    lines = []
    for name, kind, help_text, value in samples:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


BROKER_SAMPLES: Final = {  # Health.counters -> (name, type, help)
    "reconnects": (
        "streamer_broker_reconnects_total",
        "counter",
        "Times the broker's reader connected to Redis again.",
    ),
    "canary_failures": (
        "streamer_broker_canary_failures_total",
        "counter",
        "Canaries that did not come back through the reader in time (it was restarted).",
    ),
    "breaker_opened": (
        "streamer_broker_breaker_opened_total",
        "counter",
        "Times the circuit breaker around Redis opened.",
    ),
    "breaker_open": (
        "streamer_broker_breaker_open",
        "gauge",
        "1 while the circuit breaker around Redis is open (publishes answer 503).",
    ),
    "leader": (
        "streamer_broker_leader",
        "gauge",
        "1 while this worker is the one that publishes media folder changes.",
    ),
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
