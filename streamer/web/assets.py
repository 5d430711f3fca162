"""The dashboard's files (``streamer/static/``), read once into memory with their gzip
form and a strong ETag (a hash of the bytes)."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STATIC: Final = Path(__file__).resolve().parent.parent / "static"
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_GZIP_ABOVE: Final = 1024  # bytes: smaller files gain less than the header costs


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, as it is sent."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


def load_assets(folder: Path = STATIC) -> dict[str, Asset]:
    """Every file under ``folder`` by its path relative to it (``js/app.js``). Only these
    names are served, so no request can reach anything else on disk."""
    assets = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        gzipped = gzip.compress(body, 9, mtime=0) if len(body) > _GZIP_ABOVE else None
        assets[path.relative_to(folder).as_posix()] = Asset(
            body,
            gzipped,
            kind or "application/octet-stream",
            '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return assets
