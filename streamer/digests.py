"""SHA-256 digests of files, computed in a worker thread once and cached by identity.

A file's identity is ``(device, inode, size, mtime_ns, ctime_ns)``: any
write, resize or replacement changes it, so a cached digest is never stale. Concurrent
requests for the same identity share one computation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from typing import Final

Identity = tuple[int, int, int, int, int]
CHUNK: Final = 1024 * 1024


def identity(stat: os.stat_result) -> Identity:
    """Changes on any write, even one that keeps size and mtime (ctime cannot be set back)."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def repr_digest(digest: bytes) -> str:
    """The ``Repr-Digest`` field value (RFC 9530) of a SHA-256 digest."""
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


class FileChanged(Exception):
    """The file changed while it was being hashed; its digest means nothing."""


class DigestCache:
    """Bounded LRU of digests, with the computations in flight."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._digests: OrderedDict[Identity, bytes] = OrderedDict()
        self._pending: dict[Identity, asyncio.Future[bytes]] = {}
        self._max_entries = max_entries
        self._closing = threading.Event()
        self._background: set[asyncio.Task[bytes]] = set()

    def cached(self, key: Identity) -> bytes | None:
        digest = self._digests.get(key)
        if digest is not None:
            self._digests.move_to_end(key)
        return digest

    def store(self, key: Identity, digest: bytes) -> None:
        self._digests[key] = digest
        while len(self._digests) > self._max_entries:
            self._digests.popitem(last=False)

    async def digest(self, path: str, key: Identity) -> bytes:
        """The digest of ``path`` as it is at ``key``; raises :class:`FileChanged` or OSError."""
        digest = self.cached(key)
        if digest is not None:
            return digest
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._compute(path, key))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    def compute_later(self, path: str, key: Identity) -> None:
        """Start computing in the background (for files too big to wait for)."""
        if key in self._digests or key in self._pending:
            return
        task = asyncio.ensure_future(self.digest(path, key))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[bytes]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a vanished or changing file is not an error here

    async def _compute(self, path: str, key: Identity) -> bytes:
        digest = await asyncio.to_thread(self._hash_file, path, key)
        self.store(key, digest)
        return digest

    def _hash_file(self, path: str, key: Identity) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if identity(os.fstat(fd)) != key:
                raise FileChanged(path)
            hasher = hashlib.sha256()
            while chunk := os.read(fd, CHUNK):
                if self._closing.is_set():
                    raise FileChanged(path)
                hasher.update(chunk)
            if identity(os.fstat(fd)) != key:
                raise FileChanged(path)
            return hasher.digest()
        finally:
            os.close(fd)

    async def close(self) -> None:
        """Stop hashing (threads notice between chunks) and wait for the tasks to end."""
        self._closing.set()
        tasks = list(self._background) + list(self._pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
