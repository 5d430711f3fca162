"""``create_app``: wiring only. Each long-lived resource owns its lifecycle in ``cleanup_ctx``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from .broker import open_broker
from .settings import Settings
from .web import events, files, listing, logs, ops
from .web.keys import BROKER, SETTINGS, STARTED_AT
from .web.middleware import finish_headers


def create_app(settings: Settings) -> web.Application:
    # No middlewares on purpose: see streamer.errors.
    app = web.Application(client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(events.heartbeat_ctx)
    app.cleanup_ctx.append(files.files_ctx)
    app.cleanup_ctx.append(logs.logs_ctx)
    app.on_response_prepare.append(finish_headers)
    app.on_shutdown.append(events.close_streams)
    app.on_shutdown.append(logs.end_catch_ups)
    events.add_routes(app)
    files.add_routes(app)
    listing.add_routes(app)
    logs.add_routes(app)
    ops.add_routes(app)
    return app


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_broker(app[SETTINGS]) as broker:
        app[BROKER] = broker
        yield
