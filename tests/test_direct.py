"""``DirectResponse`` writes a whole small response itself, setting a few private fields of
aiohttp's ``StreamResponse`` that aiohttp's protocol reads afterwards. If an aiohttp
release renames or stops reading them, these fail loudly (the exact-bytes tests in
test_files.py would show the symptoms: wrong keep-alive, a second response)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_request import BaseRequest

from streamer.conditions import http_date
from streamer.web.direct import DirectResponse

from .helpers import raw_request, split_response


def test_aiohttp_is_a_tested_minor_version() -> None:
    major, minor = (int(part) for part in aiohttp.__version__.split(".")[:2])
    assert (major, minor) == (3, 14), "pyproject.toml pins the aiohttp versions tested"


def test_the_private_fields_direct_response_sets_still_mean_the_same() -> None:
    response = DirectResponse(200, {"X-Test": "1"}, b"body")
    assert response._headers["X-Test"] == "1"
    assert response._eof_sent is False
    assert response._req is None
    response._keep_alive = False
    assert response.keep_alive is False  # the protocol decides on keep-alive from this
    response._eof_sent = True
    assert response.prepared  # so aiohttp does not send a response of its own


def test_aiohttp_still_reads_them_where_direct_response_expects() -> None:
    finish = inspect.getsource(web_protocol.RequestHandler.finish_response)
    assert "prepare" in finish
    assert "write_eof" in finish
    assert "keep_alive" in inspect.getsource(web_protocol.RequestHandler)
    assert callable(BaseRequest._prepare_hook)  # runs the apps' on_response_prepare
    assert "_eof_sent" in inspect.getsource(web.StreamResponse.prepare)


async def test_304_and_head_of_a_big_file_are_exact(
    start_server: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    """Both are direct writes now: a 304 claims no Content-Length (RFC 9110 8.6), and a HEAD
    of a file too big for one write still declares its whole length."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "big.iso").touch()
    os.truncate(media / "big.iso", 100 * 1024 * 1024)  # sparse
    server = await start_server(media=media.resolve())
    head = (
        b"HEAD /files/big.iso HTTP/1.1\r\nHost: x\r\nX-Request-ID: r1\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = split_response(await raw_request(server, head))
    assert (status, headers["Content-Length"], body) == ("HTTP/1.1 200 OK", "104857600", b"")
    etag = headers["ETag"]
    get = (
        f"GET /files/big.iso HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n"
        "X-Request-ID: r1\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = await raw_request(server, get)
    stat = os.stat(media / "big.iso")
    date = split_response(raw)[1]["Date"]
    assert (
        raw
        == (
            "HTTP/1.1 304 Not Modified\r\n"
            f"ETag: {etag}\r\n"
            f"Last-Modified: {http_date(stat.st_mtime)}\r\n"
            "Accept-Ranges: bytes\r\n"
            "X-Request-ID: r1\r\n"
            f"Date: {date}\r\n"
            f"Server: {SERVER_SOFTWARE}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
    )
