"""``GET|HEAD /files/{path}``: files from the media root, RFC 9110 complete.

The order of the checks is the RFC's: find the representation (the file,
or a precompressed sidecar the client accepts), evaluate the preconditions
(section 13.2.2), then ``If-Range`` and ``Range`` (section 14), then send.
Everything that is not a visible regular file inside the root is the same
404, whatever the reason.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from aiohttp import web

from ..conditions import Outcome, evaluate_preconditions, http_date, if_range_allows, strong_etag
from ..digests import DigestCache, FileChanged, identity, repr_digest
from ..errors import Problem
from ..paths import resolve_inside
from ..ranges import UNSATISFIABLE, ByteRange, parse_range
from .filebody import FileShrank, Piece, send_pieces
from .keys import DIGESTS, SETTINGS

# Digests of files up to this size are computed before the first response
# (a few ms); bigger files get theirs in the background and the header once it is known.
DIGEST_INLINE_MAX: Final = 16 * 1024 * 1024
SIDECARS: Final = (("br", ".br"), ("gzip", ".gz"))  # preferred first when equally acceptable
# Percent-encodings that would smuggle a separator or NUL past the router's decoding.
_SMUGGLED: Final = ("%2f", "%5c", "%00")
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def not_found() -> Problem:
    """The one 404 for every path that is not served, whatever the reason."""
    return Problem(404, "not-found", "Not Found")  # the same body as the router's 404


@dataclass(frozen=True, slots=True)
class Representation:
    """One open file as it will be sent: the original or a precompressed sidecar."""

    path: str
    fd: int
    stat: os.stat_result
    encoding: str | None = None

    @property
    def etag(self) -> str:
        return strong_etag(self.stat)


def open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """``(fd, stat)`` of a regular file, else ``None`` (never blocks on a FIFO)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def accepted_codings(header: str) -> dict[str, float]:
    """``Accept-Encoding`` as ``{coding: q}`` (lower-case; ``*`` kept as is)."""
    codings: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        codings[name] = q
    return codings


def content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed is None:
        return "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266, 8187)."""
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\' else "_" for ch in name)
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class MediaFile:
    """The original file and its sidecars for one request; closes what it opened."""

    def __init__(self, root: str, user_path: str) -> None:
        self.root = root
        self.user_path = user_path
        self._fds: list[int] = []

    def open(self, path: str) -> Representation | None:
        opened = open_regular(path)
        if opened is None:
            return None
        self._fds.append(opened[0])
        return Representation(path, *opened)

    def sidecars(self, original: Representation) -> Iterator[tuple[str, Representation]]:
        """Sidecars inside the root that are regular files and not older than the original."""
        for coding, suffix in SIDECARS:
            path = resolve_inside(self.root, self.user_path + suffix)
            if path is None:
                continue
            sidecar = self.open(path)
            if sidecar is not None and sidecar.stat.st_mtime_ns >= original.stat.st_mtime_ns:
                yield coding, Representation(sidecar.path, sidecar.fd, sidecar.stat, coding)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def choose_sidecar(
    sidecars: list[tuple[str, Representation]], accept_encoding: str | None
) -> Representation | None:
    if not sidecars or not accept_encoding:
        return None
    accepted = accepted_codings(accept_encoding)
    best: tuple[float, Representation] | None = None
    for coding, sidecar in sidecars:
        q = accepted.get(coding, accepted.get("*", 0.0))
        if q > 0 and (best is None or q > best[0]):
            best = (q, sidecar)
    return best[1] if best else None


def base_headers(rep: Representation, name: str, *, vary: bool) -> dict[str, str]:
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": content_type(name),
        "ETag": rep.etag,
        "Last-Modified": http_date(rep.stat.st_mtime),
        "X-Content-Type-Options": "nosniff",
    }
    if rep.encoding:
        headers["Content-Encoding"] = rep.encoding
    if vary:
        headers["Vary"] = "Accept-Encoding"
    return headers


def check_query(request: web.Request) -> tuple[bool, bool]:
    """``(download, want_hash)`` from ``?download=0|1`` and ``?hash=sha256``."""
    query = request.query
    download = query.get("download", "0")
    if download not in ("0", "1"):
        raise Problem(400, "bad-query", "download must be 0 or 1.", parameter="download")
    digest = query.get("hash")
    if digest is not None and digest.lower() != "sha256":
        raise Problem(400, "bad-query", "hash must be sha256.", parameter="hash")
    return download == "1", digest is not None


async def serve_file(request: web.Request) -> web.StreamResponse:
    root = str(request.app[SETTINGS].media)
    user_path = request.match_info["path"]
    raw = request.raw_path.lower()
    if any(token in raw for token in _SMUGGLED):
        raise not_found()
    path = resolve_inside(root, user_path)
    if path is None:
        raise not_found()
    download, want_hash = check_query(request)
    for _attempt in range(2):
        media = MediaFile(root, user_path)
        try:
            return await _respond(request, media, path, download, want_hash)
        except FileShrank:
            continue  # changed between fstat and read, before anything was sent: look again
        finally:
            media.close()
    raise Problem(503, "file-changing", "The file keeps changing; retry.", headers=_RETRY)


_RETRY: Final = {"Retry-After": "1"}


def _folder_redirect(path: str, user_path: str) -> web.HTTPFound | None:
    """A folder is answered with a redirect to its listing."""
    if not os.path.isdir(path):
        return None
    return web.HTTPFound("/api/files?dir=" + quote(user_path.rstrip("/"), safe="/"))


async def _respond(
    request: web.Request, media: MediaFile, path: str, download: bool, want_hash: bool
) -> web.StreamResponse:
    original = media.open(path)
    if original is None:
        raise _folder_redirect(path, media.user_path) or not_found()
    if want_hash:
        return await _hex_digest(request, original)
    name = os.path.basename(path)
    sidecars = list(media.sidecars(original))
    rep = original
    if "Range" not in request.headers:
        rep = choose_sidecar(sidecars, request.headers.get("Accept-Encoding")) or original
    headers = base_headers(rep, name, vary=bool(sidecars))
    if download:
        headers["Content-Disposition"] = content_disposition(name)
    mtime = int(rep.stat.st_mtime)
    outcome = evaluate_preconditions(request.headers, rep.etag, mtime)
    if outcome is Outcome.NOT_MODIFIED:
        return web.Response(status=304, headers=_not_modified_headers(headers))
    if outcome is Outcome.PRECONDITION_FAILED:
        raise Problem(412, "precondition-failed", "A precondition of the request is not met.")
    size = rep.stat.st_size
    ranges = None
    if request.method == "GET" and size > 0:  # RFC 9110: only GET has range semantics
        range_header = request.headers.get("Range")
        if range_header is not None and if_range_allows(
            request.headers.get("If-Range"), rep.etag, mtime, time.time()
        ):
            ranges = parse_range(range_header, size)
    if ranges is UNSATISFIABLE:
        raise Problem(
            416,
            "range-not-satisfiable",
            f"No range of the request is inside the {size} bytes of the file.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    if not ranges:  # None: send it whole
        digest = await _known_digest(request, rep)
        if digest is not None:
            headers["Repr-Digest"] = digest
        return await send_pieces(request, 200, headers, rep.fd, [ByteRange(0, size)])
    assert isinstance(ranges, list)
    if len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(size)
        return await send_pieces(request, 206, headers, rep.fd, ranges)
    boundary = secrets.token_hex(12)
    part_type = headers["Content-Type"]
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    return await send_pieces(
        request, 206, headers, rep.fd, multipart(ranges, size, part_type, boundary)
    )


def multipart(ranges: list[ByteRange], size: int, part_type: str, boundary: str) -> list[Piece]:
    """The pieces of a ``multipart/byteranges`` body (RFC 9110 section 14.6)."""
    pieces: list[Piece] = []
    for index, span in enumerate(ranges):
        lead = "" if index == 0 else "\r\n"
        pieces.append(
            f"{lead}--{boundary}\r\nContent-Type: {part_type}\r\n"
            f"Content-Range: {span.content_range(size)}\r\n\r\n".encode("ascii")
        )
        pieces.append(span)
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return pieces


def _not_modified_headers(headers: dict[str, str]) -> dict[str, str]:
    """What a 304 carries (RFC 9110 section 15.4.5): the validators and Vary."""
    keep = ("ETag", "Last-Modified", "Vary", "Accept-Ranges")
    return {name: headers[name] for name in keep if name in headers}


async def _known_digest(request: web.Request, rep: Representation) -> str | None:
    """``Repr-Digest`` when it is cached or cheap to compute now; else start it for later."""
    digests = request.app[DIGESTS]
    key = identity(rep.stat)
    cached = digests.cached(key)
    if cached is not None:
        return repr_digest(cached)
    if rep.stat.st_size > DIGEST_INLINE_MAX:
        digests.compute_later(rep.path, key)
        return None
    try:
        return repr_digest(await digests.digest(rep.path, key))
    except (FileChanged, OSError):
        return None


async def _hex_digest(request: web.Request, rep: Representation) -> web.Response:
    """``?hash=sha256``: the hex SHA-256 of the file as it is now, as text."""
    try:
        digest = await request.app[DIGESTS].digest(rep.path, identity(rep.stat))
    except (FileChanged, OSError):
        raise Problem(503, "file-changing", "The file changed while hashing; retry.") from None
    return web.Response(
        text=digest.hex(),
        content_type="text/plain",
        headers={"ETag": rep.etag, "Cache-Control": "no-cache"},
    )


async def digests_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the digest cache, and its background hashing stopped at shutdown."""
    digests = DigestCache()
    app[DIGESTS] = digests
    yield
    await digests.close()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/files/{path:.+}", serve_file)  # GET also answers HEAD
