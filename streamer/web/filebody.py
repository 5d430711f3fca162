"""Writing a file (or parts of it) as a response body.

A body is a list of pieces: literal ``bytes`` (multipart headers) and
:class:`ByteRange` s of an open file. Small bodies are read with ``os.pread``
right on the event loop (a page-cache read of a few KiB costs less than the
thread hop that ``aiofiles`` would add) and sent in the same write as the
headers. Larger ones go out with ``loop.sendfile`` (the kernel's
``sendfile(2)``, at most :data:`SENDFILE_SLICE` bytes per call, so the
loop is never held long).

A file that shrinks while it is being sent cannot deliver the promised
``Content-Length``: the connection is closed at once, so the client sees a
short body and can retry, instead of waiting for bytes that never come.

Flow control: a response starts only once the client has read what went
before (:func:`.flow.drained`), and a big body is cut when the client has
taken none of it for ``--send-timeout`` seconds (:func:`_stall_guard`):
neither ``loop.sendfile`` nor aiohttp's own writes have any limit of their
own, so a client that stops reading would hold the handler and the open
file forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Final

from aiohttp import web

from ..ranges import ByteRange
from .direct import DirectResponse
from .flow import bytes_acked, drained
from .keys import SETTINGS

SMALL_BODY: Final = 64 * 1024  # bodies up to this size are read on the loop and sent in one write
# Most bytes one sendfile(2) may move. asyncio asks for the whole rest of the range in one
# call, and on loopback, with a client draining as fast as it can, a single non-blocking
# call moved 76 MiB and held the event loop for up to half a second.
SENDFILE_SLICE: Final = 4 * 1024 * 1024
COPY_CHUNK: Final = 256 * 1024  # where the loop cannot sendfile: read and written this much at once
Piece = bytes | ByteRange
STALL_CHECKS: Final = 4  # progress checks per send_timeout: a stall is cut within 1.25 of it

log = logging.getLogger("streamer.files")


class FileShrank(Exception):
    """The file got shorter than its ``fstat`` said before anything was sent."""


def body_length(pieces: Sequence[Piece]) -> int:
    return sum(len(piece) if isinstance(piece, bytes) else piece.length for piece in pieces)


def read_range(fd: int, span: ByteRange) -> bytes:
    """Exactly ``span`` of the file, or :class:`FileShrank`."""
    data = os.pread(fd, span.length, span.start)
    while len(data) < span.length:  # pread may return less than asked near EOF or on signals
        more = os.pread(fd, span.length - len(data), span.start + len(data))
        if not more:
            raise FileShrank
        data += more
    return data


def read_small(source: int | bytes, pieces: Sequence[Piece]) -> bytes:
    """The body: ``source`` is an open file, or the whole file's bytes."""
    if isinstance(source, bytes):
        return b"".join(
            piece if isinstance(piece, bytes) else source[piece.start : piece.stop]
            for piece in pieces
        )
    return b"".join(
        piece if isinstance(piece, bytes) else read_range(source, piece) for piece in pieces
    )


async def _send_span(
    response: web.StreamResponse, transport: asyncio.Transport, file: io.FileIO, span: ByteRange
) -> None:
    """``span`` of ``file`` with ``sendfile(2)``, a slice at a time; :class:`FileShrank` if the
    file ends early. A loop without ``sendfile`` (uvloop has none) gets the bytes copied."""
    loop = asyncio.get_running_loop()
    fd = file.fileno()
    offset = span.start
    # Each slice is brought into the page cache in a thread while the one before is sent:
    # sendfile(2) runs on the loop, and filling the cache there held it 200 ms per slice
    # (bench/hostile.py, hash-heads).
    ahead = _read_ahead_soon(fd, _slice(offset, span.stop))
    try:
        while offset < span.stop:
            piece = _slice(offset, span.stop)
            await ahead
            ahead = _read_ahead_soon(fd, _slice(piece.stop, span.stop))  # nothing past the span
            try:
                sent = await loop.sendfile(transport, file, offset, piece.length)
            except NotImplementedError:  # raised before anything is sent
                await _copy_span(response, fd, ByteRange(offset, span.stop))
                return
            if sent < piece.length:
                raise FileShrank
            offset += sent
    finally:
        ahead.cancel()  # a thread already running finishes a harmless hint


def _slice(offset: int, stop: int) -> ByteRange:
    """The most one sendfile(2) call sends from ``offset`` (see :data:`SENDFILE_SLICE`)."""
    return ByteRange(offset, min(offset + SENDFILE_SLICE, stop))


def _read_ahead_soon(fd: int, span: ByteRange) -> asyncio.Future[None]:
    """Ask the kernel, in a worker thread, to bring ``span`` of ``fd`` into the page cache
    (done at once for an empty span)."""
    if not span.length:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    return asyncio.ensure_future(asyncio.to_thread(_read_ahead, fd, span))


def _read_ahead(fd: int, span: ByteRange) -> None:
    """Blocking: where there is no such call, nothing happens."""
    with contextlib.suppress(AttributeError, OSError):
        os.posix_fadvise(fd, span.start, span.length, os.POSIX_FADV_WILLNEED)


async def _copy_span(response: web.StreamResponse, fd: int, span: ByteRange) -> None:
    """``span`` read in a worker thread and written with flow control, a chunk at a time."""
    offset = span.start
    while offset < span.stop:
        count = min(COPY_CHUNK, span.stop - offset)
        data = await asyncio.to_thread(read_range, fd, ByteRange(offset, offset + count))
        await response.write(data)
        offset += count


@contextlib.asynccontextmanager
async def _stall_guard(transport: asyncio.BaseTransport, timeout: float) -> AsyncIterator[None]:
    """Raise :class:`TimeoutError` in the block once the client has acknowledged nothing for
    ``timeout`` seconds (nginx's ``send_timeout``, measured the same way: a slow client
    that keeps reading is never cut). Checked by a timer, not per write: one check every
    ``timeout / STALL_CHECKS`` seconds whatever the speed."""
    loop = asyncio.get_running_loop()
    last = bytes_acked(transport)
    timer: asyncio.TimerHandle | None = None
    async with asyncio.timeout(timeout) as deadline:

        def check() -> None:
            nonlocal last, timer
            acked = bytes_acked(transport)
            if acked is None or acked != last:  # progress (or no way to tell: trust it)
                last = acked
                deadline.reschedule(loop.time() + timeout)
            timer = loop.call_later(timeout / STALL_CHECKS, check)

        timer = loop.call_later(timeout / STALL_CHECKS, check)
        try:
            yield
        finally:
            timer.cancel()


async def send_pieces(
    request: web.Request,
    status: int,
    headers: Mapping[str, str],
    source: int | bytes,
    pieces: Sequence[Piece],
    sent_whole: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Send ``pieces`` of ``source`` (an open file, or the whole file's bytes) with ``status``
    and ``headers``; ``sent_whole`` is called once a streamed body has all gone out (not
    for one that went in a single write). The caller closes the file afterwards."""
    length = body_length(pieces)
    if length <= SMALL_BODY or isinstance(source, bytes):
        return DirectResponse(status, dict(headers), read_small(source, pieces))
    if request.method == "HEAD":  # headers only: one write, with flow control
        return DirectResponse(status, dict(headers), b"", length=length)
    timeout = request.app[SETTINGS].send_timeout
    await drained(request, timeout)  # what went before on this connection has been read
    transport = request.transport
    assert transport is not None  # drained() raises when it is gone
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    fd = source
    with io.FileIO(fd, "rb", closefd=False) as file:
        try:
            async with _stall_guard(transport, timeout):
                for piece in pieces:
                    if isinstance(piece, bytes):
                        await response.write(piece)
                    elif piece.length <= SMALL_BODY:
                        await response.write(read_range(fd, piece))
                    else:
                        await _send_span(response, transport, file, piece)
                await response.write_eof()
            if sent_whole is not None:
                sent_whole()
        except TimeoutError:
            log.info(
                "client read nothing for %g s; closing the connection: %s", timeout, request.path
            )
            transport.abort()
            return response
        except FileShrank:
            log.warning("file shrank during a download; closing the connection: %s", request.path)
            response.force_close()
            transport.close()
            return response
        except ConnectionError:  # the client went away
            return response
        except RuntimeError:  # asyncio's sendfile on a transport the client just closed
            if not transport.is_closing():
                raise
            return response
    return response
