"""The HTTP connection policy: what a connection may cost before it has sent a request.

aiohttp's own connection handler is kept; :class:`Connection` adds what an
internet-facing server needs (nginx's ``client_header_timeout``,
``keepalive_timeout`` and ``worker_connections``):

* **a head timeout**: a connection that starts a request head must finish it
  within ``--header-timeout`` seconds, however slowly it trickles in (one
  client holding 1,100 half-sent heads used to make every other request wait
  85 s+, and no socket was ever closed);
* **an idle timeout**: aiohttp's keep-alive timer, set to ``--idle-timeout``,
  also closes a connection that never sends anything;
* **a connection cap** below the process's file-descriptor limit, so that
  file opens and log tails always find an fd: at the cap, the connection
  idle the longest (no request in progress) makes room, else the new one is
  answered 503 and closed. Open streams keep going either way;
* **problem+json for requests the HTTP parser refuses** (missing Host, a bad
  chunk size, ...), with a request id, logged as one line at info: aiohttp
  would answer them ``text/plain``, echo the request line and log a
  traceback for each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ..errors import PROBLEM_CONTENT_TYPE, problem_body
from .hooks import new_request_id

log = logging.getLogger("streamer.connections")

FDS_KEPT_FREE: Final = 64  # at least this many fds stay free of connections, ...
FDS_KEPT_FREE_SHARE: Final = 10  # ... or one in ten, for files, log tails, the watcher

_REFUSED: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/problem+json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n"
    b"X-Request-ID: %s\r\n\r\n"
)


def connection_cap(fd_limit: int) -> int:
    """How many client connections fit under a file-descriptor limit of ``fd_limit``."""
    return max(1, fd_limit - max(FDS_KEPT_FREE, fd_limit // FDS_KEPT_FREE_SHARE))


class Connection(RequestHandler):
    """aiohttp's handler of one connection, with the limits of the module docstring."""

    __slots__ = ("_head_timer", "_policy")

    def __init__(self, manager: ConnectionPolicy, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._policy = manager
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._policy.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        self._policy.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:  # a head is complete
            self._stop_head_timer()
            self._policy.busy(self)
        elif data and self._head_timer is None and not self._request_in_progress:
            self._head_timer = self._loop.call_later(
                self._policy.header_timeout, self._head_timed_out
            )

    def log_access(
        self, request: BaseRequest, response: StreamResponse, time: float | None
    ) -> None:
        super().log_access(request, response, time)
        self._policy.idle(self)  # called once each response is out: the next may begin

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if status == 500:  # a bug: aiohttp logs the traceback, the app's hook makes the problem
            return super().handle_error(request, status, exc, message)
        # one line, whatever the parser's message holds (it can quote the request over lines)
        reason = (str(getattr(exc, "message", "")) or type(exc).__name__).splitlines()[0]
        log.info("refused a malformed request from %s: %s", request.remote, reason)
        response = web.Response(
            status=status,
            body=problem_body(status, "The request is not valid HTTP/1.1.", "malformed-request"),
            headers={"Content-Type": PROBLEM_CONTENT_TYPE, "X-Request-ID": new_request_id()},
        )
        response.force_close()
        return response

    def close_idle(self) -> None:
        """Close this connection, which has no request in progress, to make room."""
        self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._request_in_progress:  # a pipelined head behind a long response: it may wait
            return
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        log.info(
            "closed a connection from %s: no whole request head in %g s",
            peer[0] if peer else "?",
            self._policy.header_timeout,
        )
        self.force_close()


class ConnectionPolicy(web.Server):
    """aiohttp's connection factory, making :class:`Connection` with this policy.

    It knows the connections with no request in progress, longest idle first, to
    pick one to close when the cap is reached.
    """

    def __init__(self, server: web.Server, *, header_timeout: float, max_connections: int) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.count = 0
        self.evicted = 0  # idle connections closed to make room (for /metrics)
        self.refused = 0  # connections answered 503 at the cap
        self._idle: OrderedDict[Connection, None] = OrderedDict()

    def __call__(self) -> Connection:
        return Connection(self, loop=self._loop, **self._kwargs)

    def opened(self, connection: Connection) -> None:
        self.count += 1
        if self.count > self.max_connections and not self._make_room():
            self.refused += 1
            self._refuse(connection)
            return
        self._idle[connection] = None

    def closed(self, connection: Connection) -> None:
        self.count -= 1
        self._idle.pop(connection, None)

    def busy(self, connection: Connection) -> None:
        self._idle.pop(connection, None)

    def idle(self, connection: Connection) -> None:
        if connection.transport is None:  # the response ended with the connection
            return
        self._idle[connection] = None
        self._idle.move_to_end(connection)

    def _make_room(self) -> bool:
        if not self._idle:
            return False
        oldest, _ = self._idle.popitem(last=False)
        self.evicted += 1
        oldest.close_idle()
        return True

    @staticmethod
    def _refuse(connection: Connection) -> None:
        transport = connection.transport
        if transport is None:
            return
        body = problem_body(503, "The server is at its connection limit.", "too-many-connections")
        transport.write(_REFUSED % (len(body), new_request_id().encode()) + body)
        connection.force_close()


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections follow a :class:`ConnectionPolicy`."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        return ConnectionPolicy(
            await super()._make_server(),
            header_timeout=self._header_timeout,
            max_connections=self._max_connections,
        )

    @property
    def policy(self) -> ConnectionPolicy:
        server = self.server
        assert isinstance(server, ConnectionPolicy)
        return server
