"""A complete small response written to the socket in one call.

For a 4 KiB file, aiohttp's general response path (header bookkeeping in a
``CIMultiDict``, the payload writer, ``write_eof``) costs more than
everything else in the request together: a bare handler returning
``web.Response`` answered 15.8k requests/s here, the same handler writing
its prepared bytes straight to the transport 25.6k. :class:`DirectResponse`
is that second way, for bodies that are already in memory: it still runs
the app's ``on_response_prepare`` hooks (request id, and whatever is added
later), honours keep-alive exactly as aiohttp would, then serializes status
line, headers and body itself and writes them with one ``transport.write``.

It sets the few private fields of ``StreamResponse`` that aiohttp's
protocol reads afterwards (``_keep_alive``, ``_eof_sent``); the exact-bytes
tests in tests/test_files.py (HTTP/1.0 and 1.1, HEAD, keep-alive) and
tests/test_direct.py would notice an aiohttp release that changes them.

Flow control: before its one write, a response waits (:func:`.flow.drained`)
until the client has read what went before, so a client that pipelines
requests and never reads holds at most one response in the server, and is
cut after ``--send-timeout``. When the client keeps up this costs one
attribute read. :func:`sent_directly` sends a handler's other small answers
(errors, redirects, 304, JSON) the same way: aiohttp's own path waits for a
full buffer without any timeout.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_request import BaseRequest

from ..conditions import http_date
from .flow import drained
from .keys import SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NO_CONTENT_LENGTH = frozenset((204, 304))  # RFC 9110 8.6: 304 must not claim a 0-byte body


class DirectResponse(web.StreamResponse):
    """``status`` with ``headers`` and ``body`` (omitted for HEAD), sent in one write.

    ``length`` is the Content-Length when it is not ``len(body)``: a HEAD of a big file."""

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes, length: int | None = None
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._direct_body = body
        self._direct_length = len(body) if length is None else length

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        self._req = request
        keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        headers = self._headers
        if self.status not in _NO_CONTENT_LENGTH:
            headers[hdrs.CONTENT_LENGTH] = str(self._direct_length)
        await request._prepare_hook(self)  # the apps' on_response_prepare signals
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = http_date(time.time())
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request.version
        if keep_alive and version == (1, 0):
            headers[hdrs.CONNECTION] = "keep-alive"
        elif not keep_alive and version == (1, 1):
            headers[hdrs.CONNECTION] = "close"
        lines = [f"HTTP/{version.major}.{version.minor} {self.status} {self.reason}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"newline in header {name!r}")
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if request.method == hdrs.METH_HEAD else self._direct_body
        if request.protocol.writing_paused:  # the client has not read what went before
            await drained(request, _send_timeout(request))
        transport.write(head + body)
        self._eof_sent = True
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        """Everything went out in :meth:`prepare`."""


def _send_timeout(request: BaseRequest) -> float:
    assert isinstance(request, web.Request)
    return request.app[SETTINGS].send_timeout


def as_direct(response: web.Response) -> DirectResponse:
    """The same status, headers and body, sent with flow control in one write."""
    body = response.body
    assert body is None or isinstance(body, bytes)  # a handler's small answers are bytes
    return DirectResponse(response.status, dict(response.headers), body or b"")


def sent_directly(handler: Handler) -> Handler:
    """``handler`` with its small answers (returned or raised ``web.Response`` s, such as
    :class:`~streamer.errors.Problem` and redirects) sent as :class:`DirectResponse`."""

    @functools.wraps(handler)
    async def flow_controlled(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            return as_direct(exc)
        if isinstance(response, web.Response) and not response.prepared:
            return as_direct(response)
        return response

    return flow_controlled
