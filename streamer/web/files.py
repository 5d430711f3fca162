"""``GET|HEAD /files/{path}``: files from the media root, RFC 9110 complete.

The order of the checks is the RFC's: find the representation (the file,
or a precompressed sidecar the client accepts), evaluate the preconditions
(section 13.2.2), then ``If-Range`` and ``Range`` (section 14), then send.
Everything that is not a visible regular file inside the root is the same
404, whatever the reason.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from aiohttp import web

from ..conditions import Outcome, evaluate_preconditions, http_date, if_range_allows, strong_etag
from ..digests import INLINE_MAX, DigestCache, FileChanged, NoDigest, identity, repr_digest
from ..errors import Problem, not_found
from ..paths import has_smuggled_separator, open_inside
from ..ranges import UNSATISFIABLE, ByteRange, parse_range
from .direct import DirectResponse, sent_directly
from .filebody import FileShrank, Piece, read_range, send_pieces
from .keys import DIGESTS, SETTINGS, SIDECAR_INDEX, SMALL_FILES
from .mediatypes import content_type
from .sidecars import SIDECARS, SidecarIndex, preferred_codings
from .smallfiles import CachedFile, SmallFileCache

SUFFIXES: Final = dict(SIDECARS)
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Representation:
    """One open file as it will be sent: the original or a precompressed sidecar."""

    path: str
    stat: os.stat_result
    fd: int | None = None  # open file, unless the whole body is already in memory
    body: bytes | None = None
    encoding: str | None = None
    etag: str = field(init=False)  # used three times per request: computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", strong_etag(self.stat))

    @property
    def source(self) -> int | bytes:
        """What :func:`send_pieces` reads the body from."""
        if self.body is not None:
            return self.body
        assert self.fd is not None
        return self.fd


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266, 8187).

    A name on disk that is not UTF-8 (``bad\\xff.txt`` reaches us as ``bad\\udcff.txt``)
    has no exact UTF-8 form: its undecodable bytes become U+FFFD."""
    name = os.fsencode(name).decode("utf-8", "replace")
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\' else "_" for ch in name)
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class Folder(Exception):
    """The path names a folder, not a file."""


class MediaFile:
    """The files opened for one request (original, sidecar); closes them all."""

    def __init__(self, root: str, user_path: str) -> None:
        self.root = root
        self.user_path = user_path
        self._fds: list[int] = []

    def open(
        self, user_path: str, cache: SmallFileCache, encoding: str | None = None
    ) -> Representation | None:
        """A regular file inside the root, else ``None``; a folder raises :class:`Folder`.

        Small settled files come from ``cache`` (and go into it when read).
        """
        cached = cache.get(user_path)
        if cached is not None:
            return Representation(cached.path, cached.stat, body=cached.body, encoding=encoding)
        opened = self._open_inside(user_path)
        if opened is None:
            return None
        fd, path, st = opened
        if stat.S_ISREG(st.st_mode):
            if not cache.worth_keeping(st):
                return Representation(path, st, fd, encoding=encoding)
            body = read_range(fd, ByteRange(0, st.st_size))
            candidate = os.path.join(self.root, user_path)
            cache.put(user_path, CachedFile(candidate, path, st, body))
            return Representation(path, st, fd, body, encoding)
        if stat.S_ISDIR(st.st_mode) and encoding is None:
            raise Folder
        return None  # FIFOs, sockets, devices

    def open_folder(self, user_path: str) -> None:
        """Raise :class:`Folder` if ``user_path`` is a visible folder inside the root."""
        opened = self._open_inside(user_path)
        if opened is not None and stat.S_ISDIR(opened[2].st_mode):
            raise Folder

    def _open_inside(self, user_path: str) -> tuple[int, str, os.stat_result] | None:
        """``(fd, real path, stat)`` of anything visible inside the root; closed with us."""
        opened = open_inside(self.root, user_path, _OPEN_FLAGS)
        if opened is None:
            return None
        fd, path = opened
        self._fds.append(fd)
        return fd, path, os.fstat(fd)

    def sidecar(
        self, original: Representation, codings: list[str], cache: SmallFileCache
    ) -> Representation | None:
        """The first sidecar of ``codings`` that is a regular file inside the root and not
        older than the original (a stale one would serve old content)."""
        for coding in codings:
            sidecar = self.open(self.user_path + SUFFIXES[coding], cache, coding)
            if sidecar is not None and sidecar.stat.st_mtime_ns >= original.stat.st_mtime_ns:
                return sidecar
        return None

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


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


@sent_directly
async def serve_file(request: web.Request) -> web.StreamResponse:
    root = str(request.app[SETTINGS].media)
    user_path = request.match_info["path"]
    if has_smuggled_separator(request.raw_path):
        raise not_found()
    folder_only = user_path.endswith("/")  # "sub/" may only name a folder
    user_path = user_path.removesuffix("/")
    download, want_hash = check_query(request)
    for _attempt in range(2):
        media = MediaFile(root, user_path)
        try:
            if folder_only:
                media.open_folder(user_path)
                raise not_found()
            return await _respond(request, media, download, want_hash)
        except FileShrank:
            continue  # changed between fstat and read, before anything was sent: look again
        except Folder:
            raise _to_folder(request, user_path) from None
        finally:
            media.close()
    raise Problem(503, "file-changing", "The file keeps changing; retry.", headers=_RETRY)


_RETRY: Final = {"Retry-After": "1"}


async def _respond(
    request: web.Request, media: MediaFile, download: bool, want_hash: bool
) -> web.StreamResponse:
    cache = request.app[SMALL_FILES]
    original = media.open(media.user_path, cache)
    if original is None:
        raise not_found()
    if want_hash:
        return await _hex_digest(request, original)
    name = os.path.basename(original.path)
    codings = request.app[SIDECAR_INDEX].codings(original.path)
    rep = original
    range_applies = request.method == "GET" and "Range" in request.headers
    if codings and not range_applies:  # never a sidecar for a range (HEAD ignores Range)
        accepted = preferred_codings(request.headers.get("Accept-Encoding"), codings)
        rep = media.sidecar(original, accepted, cache) or original
    headers = base_headers(rep, name, vary=bool(codings))
    if download:
        headers["Content-Disposition"] = content_disposition(name)
    mtime = int(rep.stat.st_mtime)
    outcome = evaluate_preconditions(request.headers, rep.etag, mtime)
    if outcome is Outcome.NOT_MODIFIED:
        return DirectResponse(304, _not_modified_headers(headers), b"")
    if outcome is Outcome.PRECONDITION_FAILED:
        raise Problem(412, "precondition-failed", "A precondition of the request is not met.")
    size = rep.stat.st_size
    ranges = None
    if request.method == "GET" and size > 0:  # RFC 9110: only GET has range semantics
        range_header = request.headers.get("Range")
        if range_header is not None and if_range_allows(
            request.headers.get("If-Range"), rep.etag, rep.stat, time.time()
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
        elif request.method == "GET" and size > INLINE_MAX:
            return await _send_while_hashing(request, headers, rep)
        return await send_pieces(request, 200, headers, rep.source, [ByteRange(0, size)])
    assert isinstance(ranges, list)
    if len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(size)
        return await send_pieces(request, 206, headers, rep.source, ranges)
    boundary = secrets.token_hex(12)
    part_type = headers["Content-Type"]
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
    return await send_pieces(
        request, 206, headers, rep.source, multipart(ranges, size, part_type, boundary)
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
    if rep.body is not None:  # small: cheaper to hash right here than in a thread
        digest = hashlib.sha256(rep.body).digest()
        digests.store(key, digest)
        return repr_digest(digest)
    if rep.stat.st_size > INLINE_MAX:  # hashed while it is downloaded: _send_while_hashing
        return None
    try:
        return repr_digest(await digests.digest(rep.path, key))
    except (NoDigest, OSError):  # busy, or changing: this response goes without
        return None


async def _send_while_hashing(
    request: web.Request, headers: dict[str, str], rep: Representation
) -> web.StreamResponse:
    """Send a big file whole while it is hashed for the ``Repr-Digest`` of later responses;
    the hash stops if the client leaves before the body is out (see ``digests``)."""
    digests = request.app[DIGESTS]
    job = digests.hash_during(rep.path, identity(rep.stat))
    pieces = [ByteRange(0, rep.stat.st_size)]
    if job is None:
        return await send_pieces(request, 200, headers, rep.source, pieces)
    whole = False

    def sent_whole() -> None:
        nonlocal whole
        whole = True

    try:
        return await send_pieces(request, 200, headers, rep.source, pieces, sent_whole)
    finally:
        digests.download_ended(job, whole)


async def _hex_digest(request: web.Request, rep: Representation) -> web.Response:
    """``?hash=sha256``: the hex SHA-256 of the file as it is now, as text."""
    try:
        digest = await request.app[DIGESTS].digest(rep.path, identity(rep.stat))
    except (FileChanged, OSError):
        raise Problem(503, "file-changing", "The file changed while hashing; retry.") from None
    except NoDigest:
        raise Problem(
            503, "hashing-busy", "Too many files are being hashed; retry.", headers=_RETRY
        ) from None
    return web.Response(
        text=digest.hex() + "\n",
        content_type="text/plain",
        headers={"ETag": rep.etag, "Cache-Control": "no-cache"},
    )


async def files_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the digest cache (its background hashing stopped at shutdown), the
    sidecar index and the small-file cache."""
    digests = DigestCache()
    app[DIGESTS] = digests
    app[SIDECAR_INDEX] = SidecarIndex()
    app[SMALL_FILES] = SmallFileCache()
    yield
    await digests.close()


@sent_directly
async def root_folder(request: web.Request) -> web.StreamResponse:
    """``/files`` and ``/files/``: the media root is a folder like any other."""
    raise _to_folder(request, "")


def _to_folder(request: web.Request, user_path: str) -> web.HTTPFound:
    """A folder's URL leads a browser to the dashboard's view of it, anyone else to its
    JSON listing."""
    where = quote(user_path, safe="/")
    if wants_html(request.headers.get("Accept", "")):
        return web.HTTPFound("/#/files/" + where)
    return web.HTTPFound("/api/files" + ("?dir=" + where if where else ""))


def wants_html(accept: str) -> bool:
    """Does ``Accept`` name ``text/html`` (with a q above 0)? What browsers send when they
    navigate; ``curl`` sends ``*/*`` and tools ask for JSON."""
    for item in accept.split(","):
        kind, *params = item.split(";")
        if kind.strip().lower() != "text/html":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def add_routes(app: web.Application) -> None:
    app.router.add_get("/files/{path:.+}", serve_file)  # GET also answers HEAD
    app.router.add_get("/files", root_folder)
    app.router.add_get("/files/", root_folder)
