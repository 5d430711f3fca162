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
import ctypes
import gc
import json
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from .app import create_app
from .errors import StartupError
from .logconfig import direct_handlers
from .settings import Settings
from .web.connections import Runner, connection_cap
from .web.keys import WORKER
from .web.ops import open_fds

log = logging.getLogger("streamer")


class AccessLogger(AbstractAccessLogger):
    """One line per request: ``addr "GET /path HTTP/1.1" status bytes seconds rid=... "agent"``.

    ``bytes`` is the declared Content-Length (what aiohttp counts misses bodies sent with
    ``sendfile``), or what was written for streams.

    Written directly rather than with aiohttp's format-string logger, which
    parses its format into a list of callables per line and cost about a
    third of the throughput of small-file requests; and handed straight to
    the batching handler when that is the only place it goes (see
    :func:`streamer.logconfig.direct_handlers`).
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._direct = direct_handlers(logger)  # skip the LogRecord when nothing else listens

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        length = response.content_length
        message = '%s "%s %s HTTP/%d.%d" %d %d %.6fs rid=%s %s' % (  # noqa: UP031
            request.remote,
            request.method,
            _escaped(request.raw_path),
            version.major,
            version.minor,
            response.status,
            response.body_length if length is None else length,
            time,
            response.headers.get("X-Request-ID", "-"),
            _quoted(request.headers.get("User-Agent", "-")),
        )
        if self._direct is not None:
            for handler in self._direct:
                handler.emit_info(self.logger.name, message)
        else:
            self.logger.info("%s", message)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _quoted(text: str) -> str:
    """``text`` in double quotes, as printable ASCII: what a client sends cannot forge a
    field or a line, nor stop the log writer (undecodable bytes arrive as surrogates)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)  # \" \\ \n \u00e9 \udcff: ASCII, one line


def _escaped(text: str) -> str:
    """A request target as printable ASCII (see :func:`_quoted`), unquoted."""
    if text.isascii() and text.isprintable() and '"' not in text:
        return text
    return json.dumps(text)[1:-1]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, app: web.Application | None = None, reuse_port: bool = False
) -> AsyncIterator[str]:
    """Serve ``app`` (default: ``create_app(settings)``) until the block exits.

    Yields the base URL, with the real port when ``settings.port`` is 0. With
    ``reuse_port``, other processes may listen on the same port (``--workers``).
    """
    app = app if app is not None else create_app(settings)
    return_big_buffers_to_the_system()
    fd_limit = raise_fd_limit()
    runner = Runner(
        app,
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections or connection_cap(fd_limit),
        keepalive_timeout=settings.idle_timeout,
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout,
        access_log_class=AccessLogger,
        auto_decompress=False,  # never inflate request bodies: see web.events.read_body
    )
    try:
        await runner.setup()  # the cleanup contexts start here (they raise StartupError)
    except BaseException:
        try:
            await app.cleanup()  # stop the contexts that did start, in reverse
        except Exception:  # never hide the reason the start failed
            log.exception("error while stopping after a failed start")
        raise
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, backlog=4096, reuse_port=reuse_port or None
        )
        try:
            await site.start()
        except OSError as exc:
            raise cannot_listen(settings.host, settings.port, exc) from None
        host, port = runner.addresses[0][:2]
        yield f"http://{url_host(host)}:{port}"
    finally:
        await runner.cleanup()


def return_big_buffers_to_the_system() -> None:
    """Have glibc's malloc serve every block of 1 MiB or more with its own ``mmap``.

    Its default threshold rises (to 32 MiB) after the first big free, and from then on
    big write buffers come from the heap, which is not given back when they are freed:
    5,000 stalled subscribers of 100 KB events, with the unsent budget holding the
    buffers near 1 GiB, peaked at 1,495 MB RSS; with a fixed threshold, 953 MB
    (bench/hostile.py, shape fanout-laggards). Not lower: every socket read allocates
    256 KiB (asyncio's read size), and at 64 KiB each read was an ``mmap``/``munmap``
    pair: +20% CPU per small-file request. Not glibc: nothing happens.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


M_MMAP_THRESHOLD: Final = -3  # from glibc's malloc.h
MMAP_THRESHOLD: Final = 1024 * 1024


def tune_garbage_collector() -> None:
    """Keep CPython's cycle collector from holding the loop for hundreds of milliseconds.

    With the default thresholds (700, 10, 10), 10,000 streams opening at once made nine
    full collections, the longest 356 ms, each walking every object of every stream and
    finding nothing to free (the streams' objects are freed by reference counting). With
    (10,000, 5, 1,000) the longest pause in the same storm was 24 ms and it took 0.7 s
    instead of 1.5 s; cyclic garbage still goes, later. What exists at start (modules,
    the app) is frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


GC_THRESHOLDS: Final = (10_000, 5, 1_000)


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit (1024 is a common soft
    default, far too few for thousands of streams); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open-file limit raised from %d to %d", soft, hard)
            return hard
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays %d: cannot raise it to %d (%s)", soft, hard, exc)
    return soft


def cannot_listen(host: str, port: int, exc: OSError) -> StartupError:
    """The one line for a port that cannot be had (taken, not allowed)."""
    return StartupError(f"cannot listen on {url_host(host)}:{port}: {exc.strerror or exc}")


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


async def serve(
    settings: Settings, worker: int | None = None, ready: Callable[[], None] | None = None
) -> None:
    """Run until SIGINT or SIGTERM, then shut down within ``shutdown_timeout``.

    ``worker``: this is that worker of ``--workers`` (see :mod:`streamer.workers`): it
    shares the port, labels its metrics, and calls ``ready`` once it listens.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # a worker stops when its supervisor says so (SIGTERM), not on a terminal's Ctrl-C
    for sig in (signal.SIGTERM,) if worker is not None else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    if worker is not None:
        app[WORKER] = worker
    async with running(settings, app, reuse_port=worker is not None) as url:
        tune_garbage_collector()
        kind = type(loop).__module__.partition(".")[0]  # "asyncio" or "uvloop"
        if worker is None:
            log.info("streamer listening on %s (media %s, %s loop)", url, settings.media, kind)
        else:
            log.info("worker %d (pid %d) serving %s (%s loop)", worker, os.getpid(), url, kind)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("shutting down")
        stopping = time.monotonic()
        exit_when_late(hard_stop_after(settings.shutdown_timeout, open_fds()))
    log.info("stopped in %.2f s", time.monotonic() - stopping)


# Past --shutdown-timeout by HARD_STOP_MARGIN the process exits whatever is still being
# closed, less KERNEL_CLOSE_SECONDS for each file left open (what the kernel takes to close
# it: 15,000 loopback connections took 0.3 s from os._exit to the end of the process).
HARD_STOP_MARGIN: Final = 0.15
KERNEL_CLOSE_SECONDS: Final = 25e-6
EXIT_FLUSH_WAIT: Final = 0.03  # for the last log lines before that exit


def hard_stop_after(shutdown_timeout: float, fds: int) -> float:
    """Seconds from the start of the shutdown to :func:`exit_when_late`'s exit, such that
    the process is gone by ``shutdown_timeout`` + 0.2 s with ``fds`` files open."""
    return max(
        shutdown_timeout / 2, shutdown_timeout + HARD_STOP_MARGIN - fds * KERNEL_CLOSE_SECONDS
    )


def exit_when_late(seconds: float) -> None:
    """End the process if the shutdown still goes on ``seconds`` from now (nginx's
    ``worker_shutdown_timeout``). Ending thousands of streams takes a send and a close each,
    ~110 µs in all, whatever the timeout: 15,000 idle streams took 1.8 s with a 1 s
    timeout. The kernel closes what is left; clients reconnect, as after any restart.
    The timer is never cancelled: it also ends an exit stuck on writing the last log
    lines to an output nobody reads (a daemon thread, it does not hold a clean exit up)."""

    def last_words() -> None:
        log.warning("shutdown still going after %.2f s: exiting now", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()

    def exit_now() -> None:
        # in a thread of their own: logging may be stuck behind an output nobody reads
        words = threading.Thread(target=last_words, daemon=True)
        words.start()
        words.join(EXIT_FLUSH_WAIT)
        os._exit(0)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()
