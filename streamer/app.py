"""``create_app``: wiring only. Each long-lived resource owns its lifecycle in ``cleanup_ctx``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from .broker import open_broker
from .errors import StartupError
from .fanout import Fanout
from .logconfig import close_log_file, open_log_file
from .settings import Settings, cannot_write_own_log
from .sources import media
from .sources.changes import watching
from .sources.loghub import LogHub
from .web import events, files, listing, logs, ops, pages, streams
from .web.hooks import finish_headers
from .web.keys import BROKER, EVENTS_FANOUT, FANOUTS, LOG_HUB, SETTINGS, STARTED_AT, UNSENT
from .web.unsent import UnsentBudget


def create_app(settings: Settings) -> web.Application:
    # No middlewares on purpose: see streamer.errors.
    app = web.Application(client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()
    app[FANOUTS] = []
    app[UNSENT] = UnsentBudget(settings.max_unsent)
    app.cleanup_ctx.append(_own_log_ctx)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_sources_ctx)
    app.cleanup_ctx.append(streams.heartbeat_ctx)
    app.cleanup_ctx.append(files.files_ctx)
    app.on_response_prepare.append(finish_headers)
    app.on_shutdown.append(streams.close_streams)
    events.add_routes(app)
    files.add_routes(app)
    listing.add_routes(app)
    logs.add_routes(app)
    ops.add_routes(app)
    pages.add_routes(app)
    return app


async def _own_log_ctx(app: web.Application) -> AsyncIterator[None]:
    """The server's own log file, when there is one (first in, last out: it sees it all)."""
    path = app[SETTINGS].log_file
    if path is None:
        yield
        return
    try:
        handler = open_log_file(path)
    except OSError as exc:
        raise StartupError(cannot_write_own_log(path, exc)) from None
    try:
        yield
    finally:
        close_log_file(handler)


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    fanout = Fanout()
    app[EVENTS_FANOUT] = fanout
    streams.register_fanout(app, fanout)
    async with open_broker(app[SETTINGS], fanout, lanes={media.TOPIC: media.HISTORY}) as broker:
        app[BROKER] = broker
        yield


async def _sources_ctx(app: web.Application) -> AsyncIterator[None]:
    """The log hub and the one watcher task (media folder and logs folder)."""
    settings = app[SETTINGS]
    hub = LogHub(settings.max_line)
    app[LOG_HUB] = hub
    streams.register_fanout(app, hub.fanout)
    media_events = media.MediaEvents(str(settings.media), media.led_by(app[BROKER]))
    folders = [str(settings.media)] + ([str(settings.logs)] if settings.logs else [])
    async with watching(folders, hub, media_events):
        yield
