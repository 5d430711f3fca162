"""Run an app on a socket with the runner options streaming needs.

Used by the CLI and by the tests, so both run the very same configuration:

* ``handler_cancellation``: when a client goes away its handler is cancelled
  at once, so a dead SSE subscriber is removed immediately, not on the next
  failed write;
* a short ``shutdown_timeout``: streams are ended by ``on_shutdown`` and get
  this long to flush, instead of aiohttp's 60 s default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from .app import create_app
from .settings import Settings

log = logging.getLogger("streamer")

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs rid=%{X-Request-ID}o "%{User-Agent}i"'


@contextlib.asynccontextmanager
async def running(settings: Settings, app: web.Application | None = None) -> AsyncIterator[str]:
    """Serve ``app`` (default: ``create_app(settings)``) until the block exits.

    Yields the base URL, with the real port when ``settings.port`` is 0.
    """
    runner = web.AppRunner(
        app if app is not None else create_app(settings),
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=4096)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield _url(host, port)
    finally:
        await runner.cleanup()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then shut down within ``shutdown_timeout``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings) as url:
        log.info("streamer listening on %s (media %s)", url, settings.media)
        await stop.wait()
        log.info("shutting down")
