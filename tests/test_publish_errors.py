"""Every bad input to publish and subscribe gets its 4xx problem+json, and loses nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from streamer.app import create_app
from streamer.server import running

from .conftest import StartServer
from .helpers import (
    assert_problem,
    host_port,
    make_settings,
    metric,
    non_loopback_address,
    publish,
    read_until,
    split_response,
)
from .sse_client import subscribe


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/events/bad%20topic", "invalid-topic"),
        ("/events/" + "x" * 65, "invalid-topic"),
        ("/events/caf%C3%A9", "invalid-topic"),
        ("/events/ok?event=bad%0Aname", "invalid-event"),
        ("/events/ok?event=", "invalid-event"),
        ("/events/ok?event=reset", "invalid-event"),
    ],
)
async def test_bad_names_are_400(
    server: str, http: aiohttp.ClientSession, path: str, kind: str
) -> None:
    async with http.post(server + path, data="x") as response:
        await assert_problem(response, 400, kind)


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (b"{not json", "application/json", "invalid-json"),
        (b"", "application/json", "invalid-json"),
        (b"\xff\xfe bad utf-8", "text/plain", "invalid-body"),
        (b'{"a": "\xff"}', "application/json", "invalid-body"),
    ],
)
async def test_bad_bodies_are_400(
    server: str, http: aiohttp.ClientSession, body: bytes, content_type: str, kind: str
) -> None:
    headers = {"Content-Type": content_type}
    async with http.post(server + "/events/t", data=body, headers=headers) as response:
        await assert_problem(response, 400, kind)


async def test_body_over_limit_is_413(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_body=1000)
    async with http.post(server + "/events/t", data=b"x" * 1001) as response:
        await assert_problem(response, 413, "body-too-large")

    async def chunked_body() -> AsyncIterator[
        bytes
    ]:  # no Content-Length: the limit is enforced while reading
        for _ in range(5):
            yield b"y" * 300

    async with http.post(server + "/events/t", data=chunked_body()) as response:
        await assert_problem(response, 413, "body-too-large")
    async with http.post(server + "/events/t", data=b"z" * 1000) as response:
        assert response.status == 201


async def test_bad_subscribe_requests_are_400(server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(server + "/events", params={"topic": "no/slash"}) as response:
        await assert_problem(response, 400, "invalid-topic")
    many = [("topic", f"t{n}") for n in range(65)]
    async with http.get(server + "/events", params=many) as response:
        await assert_problem(response, 400, "too-many-topics")


async def test_router_errors_are_problems(server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(server + "/no/such/thing") as response:
        await assert_problem(response, 404, "not-found")
    async with http.put(server + "/events/t") as response:
        body = await assert_problem(response, 405, "method-not-allowed")
        assert response.headers["Allow"] == "POST"
        assert body["status"] == 405
    async with http.get(server + "/events/t") as response:
        await assert_problem(response, 405, "method-not-allowed")


async def test_token_is_required_when_configured(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(token="s3cret")
    async with http.post(server + "/events/t", data="x") as response:
        await assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer nope"}
    async with http.post(server + "/events/t", data="x", headers=wrong) as response:
        await assert_problem(response, 401, "unauthorized")
    basic = {"Authorization": "Basic s3cret"}
    async with http.post(server + "/events/t", data="x", headers=basic) as response:
        await assert_problem(response, 401, "unauthorized")
    right = {"Authorization": "Bearer s3cret"}
    async with http.post(server + "/events/t", data="x", headers=right) as response:
        assert response.status == 201


async def test_without_token_only_loopback_may_publish(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    address = non_loopback_address()
    server = await start_server(host="0.0.0.0")
    port = server.rsplit(":", 1)[1]
    async with http.post(f"http://{address}:{port}/events/t", data="x") as response:
        await assert_problem(response, 403, "forbidden")
    async with http.post(f"http://127.0.0.1:{port}/events/t", data="x") as response:
        assert response.status == 201
    # Subscribing is open to everyone.
    async with http.get(f"http://{address}:{port}/healthz") as response:
        assert response.status == 200


async def test_request_id_is_echoed_when_sane(server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(server + "/healthz", headers={"X-Request-ID": "abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "abc-123"
    insane = {"X-Request-ID": "has spaces and \u00e9".encode().decode("latin-1")}
    async with http.get(server + "/healthz", headers=insane) as response:
        generated = response.headers["X-Request-ID"]
        assert len(generated) == 32
        assert generated != insane["X-Request-ID"]
    async with http.get(server + "/missing", headers={"X-Request-ID": "r-404"}) as response:
        assert response.status == 404
        assert response.headers["X-Request-ID"] == "r-404"


async def test_healthz(server: str, http: aiohttp.ClientSession) -> None:
    from streamer import __version__

    async with http.get(server + "/healthz") as response:
        body = await response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["subscribers"] == 0
    assert 0 <= body["uptime"] < 60
    assert body["pid"] == os.getpid()  # in-process test server
    assert body["broker"] == {"kind": "memory", "state": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/api/files"),
        ("GET", "/api/logs"),
        ("POST", "/events/t"),
        ("GET", "/files/hello.txt?hash=sha256"),
        ("GET", "/no/such/path"),  # a problem body
        ("POST", "/events/bad%20topic"),
    ],
)
async def test_json_and_text_answers_end_with_a_newline(
    server: str, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    async with http.request(method, server + path, data="x") as response:
        body = await response.read()
    assert body.endswith(b"}\n") or response.content_type == "text/plain"
    assert body.endswith(b"\n")
    assert body.count(b"\n") == 1


async def test_a_crash_is_a_500_problem_and_the_server_lives_on(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    app = create_app(settings)

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app.router.add_get("/crash", crash)
    async with running(settings, app) as server:
        async with http.get(server + "/crash") as response:
            body = await assert_problem(response, 500, "internal-server-error")
            assert "boom" not in body["detail"]  # no internals leak to clients
        async with http.get(server + "/healthz") as response:
            assert response.status == 200
    assert any("boom" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_head_of_a_missing_path_is_a_bodyless_404(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with http.head(server + "/nothing/here") as response:
        assert response.status == 404
        assert response.headers["Content-Type"] == "application/problem+json"
        assert await response.read() == b""


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"a": "\\udc80"}', "lone surrogate"),
        (b'"\\ud800"', "lone surrogate"),
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        (b"[" * 60_000, "nested too deeply"),  # unbalanced too: the depth is found first
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b"[Infinity]", "Infinity is not a JSON value"),
        (b"-Infinity", "-Infinity is not a JSON value"),
        (b"1" * 5000, "not valid JSON"),  # past Python's int() digit limit
    ],
)
async def test_json_that_subscribers_could_not_use_is_400_and_takes_no_id(
    start_server: StartServer, http: aiohttp.ClientSession, body: bytes, detail: str
) -> None:
    """The event after a refused one follows the one before it with no gap: a resume
    across the refused publish replays exactly what was published."""
    server = await start_server(max_body=100_000)
    before = await publish(http, server, "j", "before")
    headers = {"Content-Type": "application/json"}
    async with http.post(server + "/events/j", data=body, headers=headers) as response:
        problem = await assert_problem(response, 400, "invalid-json")
        assert detail in problem["detail"]
    after = await publish(http, server, "j", "after")
    epoch, seq = before.split("-")
    assert after == f"{epoch}-{int(seq) + 1}"
    async with subscribe(http, server, "j", last_event_id=before) as stream:
        [event] = await stream.wait_events(1)
        assert (event.id, event.data) == (after, "after")


async def test_compressed_bodies_are_refused_unread(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A gzip bomb is never inflated: 415 before and after authentication."""
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MB of zeros in ~50 KB
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    server = await start_server(token="s3cret", max_body=len(bomb) + 1)
    async with http.post(server + "/events/t", data=bomb, headers=headers) as response:
        await assert_problem(response, 401, "unauthorized")
    authorized = {**headers, "Authorization": "Bearer s3cret"}
    for coding in ("gzip", "deflate", "br", "GZIP"):
        authorized["Content-Encoding"] = coding
        async with http.post(server + "/events/t", data=bomb, headers=authorized) as response:
            await assert_problem(response, 415, "unsupported-encoding")
            assert response.headers["Accept-Encoding"] == "identity"
    # not even looked at: a parser that inflated it would fail on these bytes first
    authorized["Content-Encoding"] = "gzip"
    async with http.post(server + "/events/t", data=b"not gzip", headers=authorized) as response:
        await assert_problem(response, 415, "unsupported-encoding")
    authorized["Content-Encoding"] = "identity"
    async with http.post(server + "/events/t", data=b"[1]", headers=authorized) as response:
        assert response.status == 201
    assert await metric(http, server, "streamer_events_published_total") == 1


async def test_a_body_that_never_arrives_is_408_after_send_timeout(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(send_timeout=0.5)
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(b"POST /events/t HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly this")
    # (aiohttp then reads what is left of the body for up to 10 s before it closes)
    status, headers, body = split_response(await read_until(reader, b"}\n"))
    writer.close()
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["type"].endswith("/body-timeout")
    assert await metric(http, server, "streamer_events_published_total") == 0
