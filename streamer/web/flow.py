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

from aiohttp import web


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
