"""The dashboard's files over HTTP: exact headers, revalidation, the CSP, gzip, what
browsers are sent to for a folder URL, and ``/api/access``. (What the page does in a
browser is ``test_dashboard.py``.)"""

from __future__ import annotations

import gzip
import re
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from streamer.web.pages import CSP

from .helpers import assert_problem, non_loopback_address

StartServer = Callable[..., Awaitable[str]]
PLAIN = {"Accept-Encoding": "identity"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def test_the_page_is_served_with_a_strong_etag_and_a_same_origin_csp(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(server + "/", headers=PLAIN) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Content-Security-Policy"] == CSP
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        etag = r.headers["ETag"]
        page = await r.text()
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: no W/
    assert CSP.startswith("default-src 'none'; script-src 'self'; style-src 'self';")
    assert "unsafe" not in CSP
    for validator in (etag, f'"x", {etag}', "*"):
        async with http.get(server + "/", headers={**PLAIN, "If-None-Match": validator}) as r:
            assert r.status == 304
            assert r.headers["ETag"] == etag
            assert await r.read() == b""
    async with http.get(server + "/", headers={**PLAIN, "If-None-Match": f"W/{etag}"}) as r:
        assert r.status == 304  # If-None-Match compares weakly (RFC 9110 13.1.2)
    async with http.get(server + "/", headers={**PLAIN, "If-None-Match": '"other"'}) as r:
        assert r.status == 200
    since = {**PLAIN, "If-Modified-Since": "Thu, 01 Jan 2099 00:00:00 GMT"}
    async with http.get(server + "/", headers=since) as r:
        assert r.status == 200  # no Last-Modified is sent, so no date can validate
    assert '<script type="module" src="/static/js/main.js"></script>' in page


async def test_every_file_the_page_names_is_there_with_its_type(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(server + "/") as r:
        page = await r.text()
    wanted = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', page))
    seen: set[str] = set()
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    types[".svg"] = "image/svg+xml"
    while wanted - seen:
        path = (wanted - seen).pop()
        seen.add(path)
        async with http.get(server + path) as r:
            assert r.status == 200, path
            assert r.headers["Content-Type"] == types[path[path.rindex(".") :]], path
            assert r.headers["Content-Security-Policy"] == CSP
            body = await r.text()
        if path.endswith(".js"):  # the modules it imports, relative to it
            folder = path.rsplit("/", 1)[0]
            wanted |= {f"{folder}/{name}" for name in re.findall(r'from "\./([^"]+)"', body)}
    assert {"/static/js/main.js", "/static/js/sse.js", "/static/app.css"} <= seen
    assert not any("http" in path for path in seen)  # nothing from another origin


async def test_gzip_is_its_own_representation(server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(server + "/static/js/logs.js", headers=PLAIN) as r:
        plain, plain_etag = await r.read(), r.headers["ETag"]
        assert "Content-Encoding" not in r.headers
        assert r.headers["Vary"] == "Accept-Encoding"
    zipped_headers = {"Accept-Encoding": "gzip"}
    async with http.get(
        server + "/static/js/logs.js", headers=zipped_headers, auto_decompress=False
    ) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        zipped, zipped_etag = await r.read(), r.headers["ETag"]
    assert gzip.decompress(zipped) == plain
    assert len(zipped) < len(plain) / 2
    assert zipped_etag == plain_etag[:-1] + '-gzip"'
    revalidate = {**zipped_headers, "If-None-Match": zipped_etag}
    async with http.get(server + "/static/js/logs.js", headers=revalidate) as r:
        assert r.status == 304
        assert "Content-Encoding" not in r.headers
    revalidate = {**PLAIN, "If-None-Match": zipped_etag}  # the other representation
    async with http.get(server + "/static/js/logs.js", headers=revalidate) as r:
        assert r.status == 200


async def test_favicon(server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(server + "/favicon.ico") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/svg+xml"
        assert (await r.read()).startswith(b"<svg")


@pytest.mark.parametrize(
    "path",
    ["/static/missing.js", "/static/../pyproject.toml", "/static/%2e%2e/app.py", "/static/"],
)
async def test_nothing_else_is_served_under_static(
    server: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(server + path) as r:
        await assert_problem(r, 404, "not-found")


@pytest.mark.parametrize(
    ("path", "browser", "tool"),
    [
        ("/files", "/#/files/", "/api/files"),
        ("/files/", "/#/files/", "/api/files"),
        ("/files/docs", "/#/files/docs", "/api/files?dir=docs"),
        ("/files/docs/", "/#/files/docs", "/api/files?dir=docs"),
    ],
)
async def test_a_browser_asking_for_a_folder_goes_to_its_files_view(
    server: str, http: aiohttp.ClientSession, path: str, browser: str, tool: str
) -> None:
    for accept, where in [
        (HTML["Accept"], browser),
        ("text/html", browser),
        ("*/*", tool),  # curl
        ("application/json", tool),
        ("text/html;q=0, */*", tool),
        ("text/html;q=bad", tool),
    ]:
        async with http.get(server + path, headers={"Accept": accept}, allow_redirects=False) as r:
            assert r.status == 302, accept
            assert r.headers["Location"] == where, accept
    async with http.get(server + path) as r:  # aiohttp's own Accept is */*
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_a_browser_asking_for_a_file_gets_the_file(
    server: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(server + "/files/hello.txt", headers=HTML) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")


async def test_access_tells_the_page_whether_this_client_may_publish(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    address = non_loopback_address()
    open_server = await start_server(host="0.0.0.0")
    port = open_server.rsplit(":", 1)[1]
    async with http.get(f"http://127.0.0.1:{port}/api/access") as r:
        assert r.headers["Cache-Control"] == "no-store"
        assert await r.json() == {"publish": "open"}
    async with http.get(f"http://{address}:{port}/api/access") as r:
        assert await r.json() == {"publish": "closed"}
    with_token = await start_server(token="s3cret")
    async with http.get(f"{with_token}/api/access") as r:
        assert await r.json() == {"publish": "token"}
