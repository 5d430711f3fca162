"""``GET /api/files?dir=sub/dir``: what is in a folder of the media root, as JSON.

Entries are sorted by name; dotfiles, symlinks leading outside the root,
things that are neither files nor folders, and precompressed sidecars
(``x.gz`` next to ``x``) are left out, exactly the set ``/files/`` serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..errors import not_found
from ..paths import representable, resolve_inside
from .direct import sent_directly
from .formats import iso_time, json_line
from .keys import SETTINGS
from .mediatypes import content_type
from .sidecars import SIDECARS

log = logging.getLogger("streamer.files")


def _entry(root: str, rel: str, name: str) -> dict[str, Any] | None:
    path = resolve_inside(root, rel)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:  # a broken symlink, or gone meanwhile
        return None
    if stat.S_ISDIR(st.st_mode):
        return {
            "name": name,
            "type": "dir",
            "size": None,
            "mtime": iso_time(st.st_mtime),
            "link": "/api/files?dir=" + quote(rel),
        }
    if stat.S_ISREG(st.st_mode):
        return {
            "name": name,
            "type": "file",
            "size": st.st_size,
            "mtime": iso_time(st.st_mtime),
            "content_type": content_type(name),
            "link": "/files/" + quote(rel),
        }
    return None


def list_folder(root: str, rel: str) -> list[dict[str, Any]] | None:
    """The entries of ``rel`` (``""`` is the root), or ``None`` if it is not a visible folder."""
    folder = resolve_inside(root, rel)
    if folder is None or not os.path.isdir(folder):
        return None
    try:
        names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    except OSError:
        return None
    shown = [name for name in names if representable(name)]
    if len(shown) < len(names):  # no URL can name them, and JSON cannot hold them
        log.debug(
            "listing %r leaves out %d names that are not UTF-8", folder, len(names) - len(shown)
        )
        names = shown
    present = set(names)
    entries = []
    for name in names:
        if any(name.endswith(suffix) and name[: -len(suffix)] in present for _, suffix in SIDECARS):
            continue
        entry = _entry(root, f"{rel}/{name}" if rel else name, name)
        if entry is not None:
            entries.append(entry)
    return entries


@sent_directly
async def list_files(request: web.Request) -> web.StreamResponse:
    rel = request.query.get("dir", "").rstrip("/")
    entries = await asyncio.to_thread(list_folder, str(request.app[SETTINGS].media), rel)
    if entries is None:
        raise not_found()
    parent = None
    if rel:
        parent = "/api/files?dir=" + quote(rel.rpartition("/")[0])
    return web.json_response(
        {"dir": rel, "parent": parent, "entries": entries},
        headers={"Cache-Control": "no-cache"},
        dumps=json_line,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/files", list_files)
