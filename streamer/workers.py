"""``streamer serve --workers N``: N server processes on one port, kept running.

The supervisor (this module, in the process the user started) does no serving:

* it checks the broker first, so an unreachable Redis is one line and exit 2, not one
  traceback per worker;
* it binds the port itself with ``SO_REUSEPORT`` and holds it (bound, never listening:
  the kernel hands connections only to listening sockets), so ``--port 0`` means one
  port for every worker and no other program takes the port while a worker restarts;
* it starts each worker (a fresh interpreter: ``spawn``), each of which listens on that
  port with ``SO_REUSEPORT``: the kernel spreads new connections over them;
* a worker that dies is started again, after a backoff that grows while it keeps dying;
  one that cannot start at first stops everything with its one line (exit 2);
* SIGTERM or SIGINT is passed on to every worker, which has ``--shutdown-timeout`` to
  end its streams; one still there a moment after that is killed.

Workers share nothing but the port and the broker (Redis): events, resumes and the one
media watcher that publishes are the broker's business (see :mod:`streamer.broker.redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Final

from .broker import check_broker
from .errors import StartupError
from .server import cannot_listen, url_host
from .settings import Settings

log = logging.getLogger("streamer")

READY_TIMEOUT: Final = 30.0  # seconds a worker has to start listening
KILL_MARGIN: Final = 1.0  # past --shutdown-timeout, a worker still running is killed
RESTART_DELAYS: Final = (0.5, 1.0, 2.0, 5.0, 10.0)  # while a worker keeps dying
STABLE_AFTER: Final = 30.0  # a worker that ran this long starts from the first delay again
PR_SET_PDEATHSIG: Final = 1  # from linux/prctl.h


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT; the exit status."""
    from .cli import loop_factory  # the supervisor's loop is the workers' loop

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
            runner.run(check_broker(settings))
            holder = hold_port(settings.host, settings.port)
            with holder:
                port = holder.getsockname()[1]
                supervisor = Supervisor(dataclasses.replace(settings, port=port))
                return runner.run(supervisor.run())
    except StartupError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise cannot_listen(host, port, exc) from None
    return holder


@dataclasses.dataclass
class Worker:
    index: int
    process: BaseProcess
    messages: Connection  # the worker's "ready" (its URL) or its startup error
    started: float
    ready: bool = False
    error: str | None = None
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Worker] = {}
        self.stopping = asyncio.Event()
        self.failures: dict[int, int] = {}  # deaths in a row, per worker index
        self.changed = asyncio.Event()  # a worker became ready or exited

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            for index in range(1, self.settings.workers + 1):
                self.start(index)
            error = await self.all_ready()
            if error is not None:
                raise StartupError(error)
            if self.stopping.is_set():  # SIGTERM while they started
                return 0
            url = f"http://{url_host(self.settings.host)}:{self.settings.port}"
            log.info(
                "streamer listening on %s (%d workers, media %s, broker %s)",
                url,
                len(self.workers),
                self.settings.media,
                self.settings.broker.partition("://")[0],
            )
            await self.keep_running()
            return 0
        finally:
            await self.stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def start(self, index: int) -> None:
        ours, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=run_worker,
            args=(self.settings, index, theirs),
            name=f"streamer-worker-{index}",
        )
        process.start()
        theirs.close()
        worker = Worker(index, process, ours, time.monotonic())
        self.workers[index] = worker
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), self._message, worker)
        loop.add_reader(process.sentinel, self._exited, worker)

    def _message(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        try:
            message = worker.messages.recv()
        except (EOFError, OSError):
            loop.remove_reader(worker.messages.fileno())
            return
        if message == "ready":
            worker.ready = True
        else:
            worker.error = str(message)
        self.changed.set()

    def _exited(self, worker: Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.exited.set()
        self.changed.set()

    async def all_ready(self) -> str | None:
        """Wait until every worker listens; the first startup error, if any."""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while True:
                    for worker in self.workers.values():
                        if worker.error is not None:
                            return worker.error
                        if not worker.ready and worker.exited.is_set():
                            worker.process.join(1)
                            code = worker.process.exitcode
                            return f"worker {worker.index} exited at startup (code {code})"
                    if self.stopping.is_set() or all(w.ready for w in self.workers.values()):
                        return None
                    self.changed.clear()
                    await _first(self.changed.wait(), self.stopping.wait())
        except TimeoutError:
            return f"the workers did not start within {READY_TIMEOUT:.0f} s"

    async def keep_running(self) -> None:
        """Restart workers that exit, until asked to stop."""
        restarts: dict[int, asyncio.Task[None]] = {}
        while not self.stopping.is_set():
            self.changed.clear()
            for index, worker in list(self.workers.items()):
                if not worker.exited.is_set() or index in restarts:
                    continue
                worker.process.join(1)  # it is exiting (its end of the sentinel closed)
                ran = time.monotonic() - worker.started
                deaths = 1 if ran >= STABLE_AFTER else self.failures.get(index, 0) + 1
                self.failures[index] = deaths
                delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS)) - 1]
                log.warning(
                    "worker %d (pid %s) exited with code %s after %.1f s%s: restarting in %.1f s",
                    index,
                    worker.process.pid,
                    worker.process.exitcode,
                    ran,
                    f" ({worker.error})" if worker.error else "",
                    delay,
                )
                self._forget(worker)
                restarts[index] = asyncio.create_task(self._restart_later(index, delay))
            for index in [i for i, task in restarts.items() if task.done()]:
                del restarts[index]
            await _first(self.changed.wait(), self.stopping.wait())
        for task in restarts.values():
            task.cancel()

    async def _restart_later(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        while not self.stopping.is_set():
            try:
                self.start(index)
            except OSError as exc:  # no process or pipe to be had now (EAGAIN, EMFILE)
                log.error("cannot start worker %d: %s: trying again in 10 s", index, exc)
                await asyncio.sleep(RESTART_DELAYS[-1])
                continue
            self.changed.set()
            return

    def _forget(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.messages.fileno())
        worker.messages.close()
        worker.process.close()

    async def stop_all(self) -> None:
        """SIGTERM to every worker; SIGKILL to any still there after the timeout."""
        alive = [w for w in self.workers.values() if not w.exited.is_set()]
        if not alive:
            return
        log.info("stopping %d workers", len(alive))
        for worker in alive:
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_timeout + KILL_MARGIN):
                await asyncio.gather(*(worker.exited.wait() for worker in alive))
        for worker in alive:
            if not worker.exited.is_set():
                log.warning("worker %d did not stop in time: killing it", worker.index)
                worker.process.kill()
            worker.process.join(1)
        for worker in self.workers.values():
            with contextlib.suppress(ValueError):
                self._forget(worker)


async def _first(*waits: Coroutine[object, object, object]) -> None:
    """Wait until the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def run_worker(settings: Settings, index: int, messages: Connection) -> None:
    """A worker process: serve with ``SO_REUSEPORT`` until SIGTERM; tell the supervisor
    "ready", or the startup error (then exit 2)."""
    from .cli import loop_factory
    from .logconfig import configure_logging
    from .server import serve

    die_with_parent()
    configure_logging(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
            runner.run(serve(settings, worker=index, ready=lambda: messages.send("ready")))
    except StartupError as exc:
        with contextlib.suppress(OSError):
            messages.send(str(exc))
        sys.exit(2)


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies, even by
    SIGKILL: no worker is left serving on its own (Linux; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before that call
        sys.exit(0)
