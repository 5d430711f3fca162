"""``GET /``: the dashboard, the files it is made of (``streamer/static/``), and what it
asks the server about this browser (``GET /api/access``).

The page is plain HTML, CSS and JavaScript modules: no build step, nothing from another
origin, so it works offline. Its files are kept in memory (see ``assets``), each with a
strong ETag, so a reload is a 304. The ``Content-Security-Policy`` lets the page load
and connect to its own origin only and forbids inline scripts and styles: even text
that slipped into the page as markup could run nothing.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..conditions import Outcome, evaluate_preconditions
from ..errors import not_found
from .assets import Asset, load_assets
from .clients import is_loopback
from .formats import json_line
from .keys import PAGE_ASSETS, SETTINGS
from .sidecars import preferred_codings

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def _send(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        "Cache-Control": "no-cache",  # always revalidated: a new version shows at once
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    body, etag = asset.body, asset.etag
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
        if preferred_codings(request.headers.get("Accept-Encoding"), ["gzip"]):
            # another representation, so another strong ETag (RFC 9110 section 8.8.3)
            body, etag = asset.gzipped, asset.etag[:-1] + '-gzip"'
            headers["Content-Encoding"] = "gzip"
    headers["ETag"] = etag
    # only If-None-Match counts: the ETag is the version, and the page sends no date
    # (handed the whole request, an If-Modified-Since of any date would make a 304)
    none_match = request.headers.get("If-None-Match")
    only_etag = {"If-None-Match": none_match} if none_match is not None else {}
    if evaluate_preconditions(only_etag, etag, 0) is Outcome.NOT_MODIFIED:
        headers.pop("Content-Encoding", None)
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


async def dashboard(request: web.Request) -> web.Response:
    """``GET /``: the page; its views are chosen by the URL's fragment (``#/files/docs``)."""
    return _send(request, request.app[PAGE_ASSETS]["index.html"])


async def static_file(request: web.Request) -> web.Response:
    asset = request.app[PAGE_ASSETS].get(request.match_info["name"])
    if asset is None:
        raise not_found()
    return _send(request, asset)


async def favicon(request: web.Request) -> web.Response:
    """``/favicon.ico`` for clients that ask without reading the page (it is an SVG)."""
    return _send(request, request.app[PAGE_ASSETS]["favicon.svg"])


async def access(request: web.Request) -> web.Response:
    """``GET /api/access``: what this client may do, so the page shows only forms that can
    work. ``publish`` is ``open`` (a loopback client, no token configured), ``token`` (a
    token is configured: the page asks for it) or ``closed``."""
    if request.app[SETTINGS].token is not None:
        publish = "token"
    else:
        publish = "open" if is_loopback(request.remote) else "closed"
    return web.json_response(
        {"publish": publish}, headers={"Cache-Control": "no-store"}, dumps=json_line
    )


def add_routes(app: web.Application) -> None:
    app[PAGE_ASSETS] = load_assets()
    app.router.add_get("/", dashboard)
    app.router.add_get("/static/{name:.+}", static_file)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/api/access", access)
