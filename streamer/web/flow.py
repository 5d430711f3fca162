"""Flow control for bytes written to a client's transport.

Whatever a handler writes waits in the transport's buffer until the client
reads it. A client that pipelines requests and never reads the answers, or
resumes a stream and stops reading, would otherwise grow that buffer without
bound: every response path waits here before it writes more, and a client
that leaves a response unread for ``--send-timeout`` seconds is cut (nginx's
``send_timeout``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Final

from aiohttp import web

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64 at this offset since Linux 4.1.
_TCP_INFO_LENGTH: Final = 128
_BYTES_ACKED_AT: Final = 120


async def drained(request: web.BaseRequest, timeout: float) -> None:
    """Return once the connection's write buffer is below its high-water mark.

    Raises :class:`ConnectionResetError` (after aborting the connection) when
    the client has gone, or has not read enough within ``timeout`` seconds.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away")
    if not request.protocol.writing_paused:
        return
    try:
        async with asyncio.timeout(timeout):
            await request.writer.drain()
    except TimeoutError:
        transport.abort()
        raise ConnectionResetError(f"the client read nothing for {timeout:g} s") from None


def bytes_acked(transport: asyncio.BaseTransport) -> int | None:
    """How many bytes the client's TCP has acknowledged so far; ``None`` if the system
    does not say. During ``sendfile(2)`` this is the only sign of progress there is."""
    sock = transport.get_extra_info("socket")
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
    except (AttributeError, OSError):  # not Linux, not TCP, or closed
        return None
    if len(info) < _TCP_INFO_LENGTH:
        return None
    acked: int = struct.unpack_from("=Q", info, _BYTES_ACKED_AT)[0]
    return acked
