"""``DirectResponse`` writes a whole small response itself, setting a few private fields of
aiohttp's ``StreamResponse`` that aiohttp's protocol reads afterwards. If an aiohttp
release renames or stops reading them, these fail loudly (the exact-bytes tests in
test_files.py would show the symptoms: wrong keep-alive, a second response)."""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.web_request import BaseRequest

from streamer.web.direct import DirectResponse


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
