"""``/files/`` and ``/api/files`` over a real server: exact responses, preconditions, safety."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from streamer.web import smallfiles

from .helpers import assert_problem, host_port, metric, raw_request, split_response, wait_for

DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes, every offset recognisable
NOT_FOUND = {
    "type": "https://streamer.invalid/problems/not-found",
    "title": "Not Found",
    "status": 404,
    "detail": "Not Found",
}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "data.bin").write_bytes(DATA)
    (root / "empty.txt").write_bytes(b"")
    (root / "sub" / "notes.md").write_text("# notes\n")
    (root / "sub" / "deeper" / "x.json").write_text("{}")
    (root / "héllo wörld.txt").write_text("unicode name\n")
    (root / ".secret").write_text("hidden")
    (root / "page.html").write_text("<p>" + "compress me " * 100 + "</p>")
    (root / "page.html.gz").write_bytes(gzip.compress((root / "page.html").read_bytes()))
    (tmp_path / "outside.txt").write_text("outside")
    (tmp_path / "outside.txt.gz").write_bytes(gzip.compress(b"outside"))
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "linked.txt").symlink_to(root / "sub" / "notes.md")
    (root / "notes.txt").write_text("plain notes\n")
    (root / "notes.txt.gz").symlink_to(tmp_path / "outside.txt.gz")  # the sidecar trick
    os.mkfifo(root / "fifo")
    return root.resolve()


@pytest.fixture
async def files(media: Path, start_server: Callable[..., Awaitable[str]]) -> str:
    return await start_server(media=media)


# --- whole files, HEAD, headers ----------------------------------------------------------


async def test_whole_file_with_validators_and_digest(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{files}/files/data.bin") as response:
        assert response.status == 200
        assert await response.read() == DATA
        headers = response.headers
    st = os.stat(media / "data.bin")
    assert headers["ETag"] == (
        f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"'
    )
    assert headers["Last-Modified"] == email.utils.formatdate(int(st.st_mtime), usegmt=True)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Length"] == str(len(DATA))
    digest = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert headers["Repr-Digest"] == f"sha-256=:{digest}:"
    assert "Content-Disposition" not in headers
    assert "Vary" not in headers


async def test_head_has_the_headers_of_get_and_no_body(files: str) -> None:
    for path in ("data.bin", "page.html", "sub/notes.md", "empty.txt"):
        get = split_response(
            await raw_request(files, f"GET /files/{path} HTTP/1.0\r\n\r\n".encode())
        )
        head = split_response(
            await raw_request(files, f"HEAD /files/{path} HTTP/1.0\r\n\r\n".encode())
        )
        for headers in (get[1], head[1]):
            del headers["Date"], headers["X-Request-ID"]
        assert head[0] == get[0] == "HTTP/1.0 200 OK"
        assert head[1] == get[1]
        assert head[2] == b""


async def test_exact_bytes_of_a_single_range(files: str, media: Path) -> None:
    raw = await raw_request(files, b"GET /files/data.bin HTTP/1.0\r\nRange: bytes=10-19\r\n\r\n")
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.0 206 Partial Content"
    assert headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert headers["Content-Length"] == "10"
    assert "Repr-Digest" not in headers
    assert body == DATA[10:20]


async def test_exact_bytes_of_multiple_ranges(files: str) -> None:
    raw = await raw_request(
        files, b"GET /files/data.bin HTTP/1.0\r\nRange: bytes=0-2, -4, 100-101\r\n\r\n"
    )
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.0 206 Partial Content"
    match = re.fullmatch(r"multipart/byteranges; boundary=([0-9a-f]{24})", headers["Content-Type"])
    assert match, headers["Content-Type"]
    boundary = match[1]
    size = len(DATA)
    expected = (
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: bytes 0-2/{size}\r\n\r\n".encode()
        + DATA[0:3]
        + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: bytes {size - 4}-{size - 1}/{size}\r\n\r\n".encode()
        + DATA[-4:]
        + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: bytes 100-101/{size}\r\n\r\n".encode()
        + DATA[100:102]
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert body == expected
    assert headers["Content-Length"] == str(len(expected))


async def test_multipart_parsed_back_by_a_client(files: str, http: aiohttp.ClientSession) -> None:
    ranges = [(0, 99), (500, 599), (1000, 1027)]
    header = "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)
    async with http.get(f"{files}/files/data.bin", headers={"Range": header}) as response:
        assert response.status == 206
        reader = aiohttp.MultipartReader.from_response(response)
        parts = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            parts.append((part.headers["Content-Range"], await part.read()))
    assert parts == [(f"bytes {a}-{b}/{len(DATA)}", DATA[a : b + 1]) for a, b in ranges]


async def test_overlapping_ranges_are_merged_into_one_part(
    files: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{files}/files/data.bin", headers={"Range": "bytes=0-99,50-149,-2000"}
    ) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-{len(DATA) - 1}/{len(DATA)}"
        assert await response.read() == DATA


@pytest.mark.parametrize(
    "header",
    ["bytes=-0", "bytes=1028-", "bytes=5000-6000", "bytes=1028-,-0"],
)
async def test_unsatisfiable_ranges_get_416(
    files: str, http: aiohttp.ClientSession, header: str
) -> None:
    async with http.get(f"{files}/files/data.bin", headers={"Range": header}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
        assert response.content_type == "application/problem+json"
        assert (await response.json())["status"] == 416


@pytest.mark.parametrize(
    "header",
    ["items=0-1", "bytes=5-2", "bytes=abc", "bytes 0-1", "bytes=" + ",".join(["0-0"] * 33)],
)
async def test_unknown_units_and_invalid_ranges_get_the_whole_file(
    files: str, http: aiohttp.ClientSession, header: str
) -> None:
    async with http.get(f"{files}/files/data.bin", headers={"Range": header}) as response:
        assert response.status == 200
        assert await response.read() == DATA


async def test_range_on_head_and_on_an_empty_file_is_ignored(files: str) -> None:
    status, headers, body = split_response(
        await raw_request(files, b"HEAD /files/data.bin HTTP/1.0\r\nRange: bytes=0-1\r\n\r\n")
    )
    assert (status, headers["Content-Length"], body) == ("HTTP/1.0 200 OK", "1028", b"")
    status, headers, body = split_response(
        await raw_request(files, b"GET /files/empty.txt HTTP/1.0\r\nRange: bytes=-5\r\n\r\n")
    )
    assert (status, headers["Content-Length"], body) == ("HTTP/1.0 200 OK", "0", b"")


# --- preconditions and If-Range -----------------------------------------------------------


async def get(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, CIMultiDict[str], bytes]:
    async with http.get(url, headers={k.replace("_", "-"): v for k, v in headers.items()}) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


async def test_conditional_requests(files: str, http: aiohttp.ClientSession) -> None:
    url = f"{files}/files/data.bin"
    _, headers, _ = await get(http, url)
    etag, modified = headers["ETag"], headers["Last-Modified"]
    older = email.utils.formatdate(
        email.utils.parsedate_to_datetime(modified).timestamp() - 10, usegmt=True
    )

    status, h304, body = await get(http, url, If_None_Match=etag)
    assert (status, body) == (304, b"")
    assert h304["ETag"] == etag
    assert h304["Last-Modified"] == modified
    assert "Content-Length" not in h304 or h304["Content-Length"] == "0"
    assert (await get(http, url, If_None_Match=f'"nope", W/{etag}'))[0] == 304  # weak compare
    assert (await get(http, url, If_None_Match='"nope"'))[0] == 200
    assert (await get(http, url, If_Modified_Since=modified))[0] == 304
    assert (await get(http, url, If_Modified_Since=older))[0] == 200
    assert (await get(http, url, If_Match=etag))[0] == 200
    assert (await get(http, url, If_Match="*"))[0] == 200
    status, h412, body = await get(http, url, If_Match='"nope"')
    assert status == 412
    assert h412["Content-Type"] == "application/problem+json"
    assert (await get(http, url, If_Match=f"W/{etag}"))[0] == 412  # strong compare
    assert (await get(http, url, If_Unmodified_Since=older))[0] == 412
    assert (await get(http, url, If_Unmodified_Since=modified))[0] == 200
    # RFC 9110 13.2.2: If-Match is evaluated before If-None-Match
    assert (await get(http, url, If_Match='"nope"', If_None_Match=etag))[0] == 412
    # If-None-Match present: If-Modified-Since is ignored
    assert (await get(http, url, If_None_Match='"nope"', If_Modified_Since=modified))[0] == 200
    # 304 wins over Range
    assert (await get(http, url, If_None_Match=etag, Range="bytes=0-1"))[0] == 304


async def test_if_range(files: str, media: Path, http: aiohttp.ClientSession) -> None:
    url = f"{files}/files/data.bin"
    # A date is a strong validator only for a file unchanged for a second (mtime and ctime).
    st = os.stat(media / "data.bin")
    await wait_for(lambda: time.time() - max(st.st_mtime, st.st_ctime) >= 1.05, timeout=3)
    _, headers, _ = await get(http, url)
    etag, modified = headers["ETag"], headers["Last-Modified"]
    older = email.utils.formatdate(int(st.st_mtime) - 1, usegmt=True)
    assert (await get(http, url, Range="bytes=0-3", If_Range=etag))[0] == 206
    assert (await get(http, url, Range="bytes=0-3", If_Range=modified))[0] == 206
    for validator in ('"changed"', f"W/{etag}", older, "garbage"):
        status, _, body = await get(http, url, Range="bytes=0-3", If_Range=validator)
        assert (status, body) == (200, DATA), validator

    # The file changes under a paused download: resuming with the old ETag gets it whole.
    (media / "data.bin").write_bytes(DATA[::-1])
    status, _, body = await get(http, url, Range="bytes=4-", If_Range=etag)
    assert (status, body) == (200, DATA[::-1])


async def test_if_range_date_of_a_file_with_mtime_set_back_is_not_trusted(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    os.utime(media / "data.bin", (1_600_000_000, 1_600_000_000))  # like cp -p: ctime is now
    url = f"{files}/files/data.bin"
    _, headers, _ = await get(http, url)
    status, _, _ = await get(http, url, Range="bytes=0-3", If_Range=headers["Last-Modified"])
    assert status == 200


async def test_if_range_date_of_a_file_modified_this_second_is_not_trusted(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    (media / "fresh.bin").write_bytes(DATA)
    url = f"{files}/files/fresh.bin"
    _, headers, _ = await get(http, url)
    status, _, _ = await get(http, url, Range="bytes=0-3", If_Range=headers["Last-Modified"])
    assert status == 200


# --- names, types, query parameters -------------------------------------------------------


async def test_download_disposition_with_a_non_ascii_name(
    files: str, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await get(http, f"{files}/files/h%C3%A9llo%20w%C3%B6rld.txt?download=1")
    assert (status, body) == (200, b"unicode name\n")
    assert headers["Content-Disposition"] == (
        "attachment; filename=\"h_llo w_rld.txt\"; filename*=UTF-8''h%C3%A9llo%20w%C3%B6rld.txt"
    )
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("query", ["download=yes", "hash=md5"])
async def test_bad_query_values_get_400(
    files: str, http: aiohttp.ClientSession, query: str
) -> None:
    async with http.get(f"{files}/files/data.bin?{query}") as response:
        body = await assert_problem(response, 400, "bad-query")
    assert body["parameter"] == query.partition("=")[0]


async def test_hash_parameter_gives_the_hex_digest(files: str, http: aiohttp.ClientSession) -> None:
    status, headers, body = await get(http, f"{files}/files/data.bin?hash=sha256")
    assert (status, body) == (200, hashlib.sha256(DATA).hexdigest().encode() + b"\n")
    assert headers["Content-Type"].startswith("text/plain")


# --- precompressed sidecars ---------------------------------------------------------------


async def test_gzip_sidecar_served_to_clients_that_accept_it(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    url = f"{files}/files/page.html"
    plain = (media / "page.html").read_bytes()
    packed = (media / "page.html.gz").read_bytes()
    async with http.get(
        url, headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"}, auto_decompress=False
    ) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await r.read() == packed
        gz_etag = r.headers["ETag"]
    for accept in ("identity", "gzip;q=0", "br", ""):
        async with http.get(url, headers={"Accept-Encoding": accept}, auto_decompress=False) as r:
            assert "Content-Encoding" not in r.headers, accept
            assert r.headers["Vary"] == "Accept-Encoding"
            assert await r.read() == plain
            assert r.headers["ETag"] != gz_etag
    # never for a range request
    async with http.get(
        url, headers={"Accept-Encoding": "gzip", "Range": "bytes=0-2"}, auto_decompress=False
    ) as r:
        assert r.status == 206
        assert "Content-Encoding" not in r.headers
        assert await r.read() == plain[:3]


async def test_stale_sidecar_is_ignored(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    os.utime(media / "page.html.gz", (1_000_000, 1_000_000))
    async with http.get(
        f"{files}/files/page.html", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as r:
        assert "Content-Encoding" not in r.headers


async def test_sidecar_symlink_outside_the_root_is_not_followed(
    files: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{files}/files/notes.txt", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as r:
        assert "Content-Encoding" not in r.headers
        assert await r.read() == b"plain notes\n"
    async with http.get(f"{files}/files/notes.txt.gz") as r:
        assert r.status == 404
        assert await r.json() == NOT_FOUND


# --- safety ---------------------------------------------------------------------------------

TRAVERSALS = [
    "/files/../pyproject.toml",
    "/files/..%2f..%2fpyproject.toml",
    "/files/%2e%2e/%2e%2e/pyproject.toml",
    "/files/%2E%2E%2Fetc%2Fpasswd",
    "/files/sub/..%2f..%2f..%2fetc/passwd",
    "/files/..\\..\\etc\\passwd",
    "/files/..%5c..%5cetc%5cpasswd",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/C:/Windows/win.ini",
    "/files/data.bin%00.txt",
    "/files/.secret",
    "/files/sub/../.secret",
    "/files/%2esecret",
    "/files/escape.txt",
    "/files/notes.txt.gz",
    "/files/fifo",
    "/files/missing.txt",
    "/files/data.bin/",
    "/files/sub//",
    "/files/" + "a" * 300,
    "/files/" + "a/" * 700 + "x",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_everything_outside_or_hidden_is_the_same_404(files: str, path: str) -> None:
    raw = await raw_request(files, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    status, headers, body = split_response(raw)
    assert status == "HTTP/1.0 404 Not Found", path
    assert headers["Content-Type"] == "application/problem+json"
    assert body == (
        b'{"type": "https://streamer.invalid/problems/not-found", "title": "Not Found",'
        b' "status": 404, "detail": "Not Found"}\n'
    )


async def test_symlink_inside_the_root_is_served(files: str, http: aiohttp.ClientSession) -> None:
    status, _, body = await get(http, f"{files}/files/linked.txt")
    assert (status, body) == (200, b"# notes\n")


async def test_folder_redirects_to_its_listing(files: str, http: aiohttp.ClientSession) -> None:
    for path in ("sub/deeper", "sub/deeper/"):
        async with http.get(f"{files}/files/{path}", allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "/api/files?dir=sub/deeper"
    for path in ("/files", "/files/"):  # the media root is a folder too
        async with http.get(f"{files}{path}", allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "/api/files"
        async with http.head(f"{files}{path}", allow_redirects=False) as r:
            assert r.status == 302
    async with http.get(f"{files}/files/") as r:  # and the listing is where it leads
        assert r.status == 200
        assert (await r.json())["dir"] == ""


async def test_post_to_a_file_is_405_problem(files: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{files}/files/data.bin") as r:
        assert r.status == 405
        assert r.content_type == "application/problem+json"
        assert "GET" in r.headers["Allow"]


# --- listing --------------------------------------------------------------------------------


async def test_listing(files: str, media: Path, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{files}/api/files") as r:
        assert r.status == 200
        listing = await r.json()
    names = [entry["name"] for entry in listing["entries"]]
    assert names == sorted(names)
    # no dotfiles, no sidecars, no escaping symlinks, no fifo
    assert names == [
        "data.bin",
        "empty.txt",
        "héllo wörld.txt",
        "linked.txt",
        "notes.txt",
        "page.html",
        "sub",
    ]
    data = listing["entries"][0]
    st = os.stat(media / "data.bin")
    assert data["size"] == len(DATA)
    assert data["type"] == "file"
    assert data["link"] == "/files/data.bin"
    assert data["mtime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
    assert listing["entries"][2]["link"] == "/files/h%C3%A9llo%20w%C3%B6rld.txt"
    assert listing["entries"][-1] == {
        "name": "sub",
        "type": "dir",
        "size": None,
        "mtime": listing["entries"][-1]["mtime"],
        "link": "/api/files?dir=sub",
    }
    assert listing["parent"] is None

    async with http.get(f"{files}/api/files?dir=sub") as r:
        sub = await r.json()
    assert [e["link"] for e in sub["entries"]] == [
        "/api/files?dir=sub/deeper",
        "/files/sub/notes.md",
    ]
    assert sub["parent"] == "/api/files?dir="


@pytest.mark.parametrize(
    "folder", ["..", "../..", "/etc", ".git", "sub/../..", "data.bin", "nope", "sub\\..\\.."]
)
async def test_listing_outside_the_root_is_404(
    files: str, http: aiohttp.ClientSession, folder: str
) -> None:
    async with http.get(f"{files}/api/files", params={"dir": folder}) as r:
        assert r.status == 404
        assert await r.json() == NOT_FOUND


# --- the small-file cache -------------------------------------------------------------------


async def test_cached_small_file_follows_changes(
    files: str, media: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smallfiles, "SETTLED_NS", 0)  # cache even files changed just now
    url = f"{files}/files/sub/notes.md"
    path = media / "sub" / "notes.md"
    for _ in range(2):  # the second answer comes from the cache
        status, headers, body = await get(http, url)
        assert (status, body) == (200, b"# notes\n")
    first_etag = headers["ETag"]
    assert (await get(http, url, Range="bytes=2-6"))[2] == b"notes"

    path.write_bytes(b"# NOTES\n")  # same size
    os.utime(path, ns=(10**18, 10**18))
    status, headers, body = await get(http, url)
    assert (status, body) == (200, b"# NOTES\n")
    assert headers["ETag"] != first_etag
    assert headers["Repr-Digest"] == "sha-256=:{}:".format(
        base64.b64encode(hashlib.sha256(b"# NOTES\n").digest()).decode()
    )

    path.unlink()
    path.symlink_to(media.parent / "outside.txt")  # now escapes the root
    status, _, body = await get(http, url)
    assert status == 404


async def test_metrics_count_cached_files_and_open_fds(
    files: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smallfiles, "SETTLED_NS", 0)

    assert await metric(http, files, "streamer_small_files_cached") == 0
    await get(http, f"{files}/files/data.bin")
    assert await metric(http, files, "streamer_small_files_cached") == 1
    assert await metric(http, files, "streamer_open_files") > 0


# --- small responses written directly: keep-alive exactly as aiohttp does it ---------------


async def read_response(reader: asyncio.StreamReader) -> tuple[str, CIMultiDict[str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(": ")
        headers.add(name, value)
    body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 5)
    return status, headers, body


async def test_keep_alive_and_pipelining(files: str) -> None:
    reader, writer = await asyncio.open_connection(*host_port(files))
    # HTTP/1.1: two pipelined requests, then one asking to close
    writer.write(
        b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\n\r\n"
        b"HEAD /files/data.bin HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    status, headers, body = await read_response(reader)
    assert (status, body) == ("HTTP/1.1 206 Partial Content", DATA[:4])
    assert "Connection" not in headers
    assert set(headers) >= {"X-Request-ID", "Date", "Server", "ETag", "Content-Range"}
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 1028\r\n" in head
    writer.write(b"GET /files/data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, headers["Connection"], body) == ("HTTP/1.1 200 OK", "close", DATA)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the server closed
    writer.close()

    # HTTP/1.0 asking for keep-alive gets it, and a second answer on the same connection
    reader, writer = await asyncio.open_connection(*host_port(files))
    for _ in range(2):
        writer.write(b"GET /files/data.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, headers["Connection"], body) == ("HTTP/1.0 200 OK", "keep-alive", DATA)
    writer.close()


# --- regressions found in review ------------------------------------------------------------


async def test_unicode_spaces_in_names_are_served(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    (media / "nb\u00a0sp\u3000x.txt").write_text("spaces\n")
    status, _, body = await get(http, f"{files}/files/nb%C2%A0sp%E3%80%80x.txt?x=%2F")
    assert (status, body) == (200, b"spaces\n")
    async with http.get(f"{files}/api/files") as r:
        assert "nb\u00a0sp\u3000x.txt" in [e["name"] for e in (await r.json())["entries"]]


async def test_head_with_range_answers_like_a_plain_get(files: str) -> None:
    common = "Accept-Encoding: gzip\r\n"
    get_raw = await raw_request(files, f"GET /files/page.html HTTP/1.0\r\n{common}\r\n".encode())
    head_raw = await raw_request(
        files, f"HEAD /files/page.html HTTP/1.0\r\n{common}Range: bytes=0-3\r\n\r\n".encode()
    )
    (get_status, get_headers, _), (head_status, head_headers, body) = (
        split_response(get_raw),
        split_response(head_raw),
    )
    for headers in (get_headers, head_headers):
        del headers["Date"], headers["X-Request-ID"]
    assert (head_status, head_headers, body) == (get_status, get_headers, b"")
    assert head_headers["Content-Encoding"] == "gzip"


async def test_same_size_rewrite_with_the_old_mtime_gets_a_new_etag_and_digest(
    files: str, media: Path, http: aiohttp.ClientSession
) -> None:
    path = media / "sub" / "notes.md"
    os.utime(path, (1_700_000_000, 1_700_000_000))
    _, before, _ = await get(http, f"{files}/files/sub/notes.md")
    path.write_bytes(b"# NOTES\n")  # same size, then the mtime put back (cp -p, touch -d)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    status, after, body = await get(http, f"{files}/files/sub/notes.md")
    assert (status, body) == (200, b"# NOTES\n")
    assert after["ETag"] != before["ETag"]
    digest = base64.b64encode(hashlib.sha256(b"# NOTES\n").digest()).decode()
    assert after["Repr-Digest"] == f"sha-256=:{digest}:"
    assert (await get(http, f"{files}/files/sub/notes.md", If_None_Match=before["ETag"]))[0] == 200
