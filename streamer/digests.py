"""SHA-256 digests of files, computed in threads of their own once and cached by identity.

A file's identity is ``(device, inode, size, mtime_ns, ctime_ns)``: any
write, resize or replacement changes it, so a cached digest is never stale.

Hashing is bounded, so that no number of requests for big files can hold
anything else up:

* It runs in two small pools of its own, never in the default executor that
  file opens, listings and log reads use (six HEAD requests on big files once
  took all of its workers: ``/api/files`` timed out and a log line took 82 s).
  One worker hashes files up to :data:`INLINE_MAX`, whose digest a response
  waits for (8 ms for 16 MiB at 2 GB/s here); one hashes the bigger ones
  (a second per 2 GB), so a big file never delays a small file's response.
* At most :data:`MAX_JOBS` hashes per pool are queued or running. When a pool
  is full a new one is refused (:class:`HashingBusy`): the response goes
  without ``Repr-Digest`` rather than waiting.
* One hash per identity at a time: concurrent requests share it.
* A hash nobody wants any more stops between two blocks: a big file's hash
  asked for by ``?hash=sha256`` is cancelled when its last client leaves.
  A big file's hash for ``Repr-Digest`` of later responses runs while a
  download of that file does (never for a HEAD): it stops if every such
  download was cut short, and finishes once one was sent whole. Small
  files' hashes run to the end: one costs less to finish than to start
  again on the next request.
* :meth:`DigestCache.close` (at app cleanup) stops every hash within one
  block and does not wait for the threads.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

Identity = tuple[int, int, int, int, int]
CHUNK: Final = 1024 * 1024  # read per step; the stop flags are checked between steps (0.5 ms)
INLINE_MAX: Final = 16 * 1024 * 1024  # digests of files up to this size are waited for
MAX_JOBS: Final = 4  # per pool, queued or running


def identity(stat: os.stat_result) -> Identity:
    """Changes on any write, even one that keeps size and mtime (ctime cannot be set back)."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def repr_digest(digest: bytes) -> str:
    """The ``Repr-Digest`` field value (RFC 9530) of a SHA-256 digest."""
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


class NoDigest(Exception):
    """No digest now; the caller goes without (or asks the client to retry)."""


class FileChanged(NoDigest):
    """The file changed while it was being hashed; its digest means nothing."""


class HashingBusy(NoDigest):
    """Too many hashes are queued already."""


class HashStopped(NoDigest):
    """The hash was stopped: nobody wanted it any more, or the server is stopping."""


@dataclass(eq=False)
class _Job:
    """One hash in a pool, and who still wants it."""

    future: asyncio.Future[bytes]
    stop: threading.Event = field(default_factory=threading.Event)
    waiters: int = 0
    for_cache: bool = False  # finish it even when no request waits any more


class DigestCache:
    """Bounded LRU of digests, with the hashes in flight."""

    def __init__(self, max_entries: int = 4096, max_jobs: int = MAX_JOBS) -> None:
        self._digests: OrderedDict[Identity, bytes] = OrderedDict()
        self._jobs: dict[Identity, _Job] = {}
        self._max_entries = max_entries
        self._max_jobs = max_jobs
        self._closing = threading.Event()
        self._small = _pool("small")
        self._big = _pool("big")
        self._queued = {self._small: 0, self._big: 0}

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
        """The digest of ``path`` as it is at ``key``; raises :class:`NoDigest` or OSError.

        A small file's hash, or one already running for the cache, goes on if the
        caller is cancelled; a big file's is stopped when no caller waits for it."""
        digest = self.cached(key)
        if digest is not None:
            return digest
        job = self._join(path, key, for_cache=key[2] <= INLINE_MAX)
        try:
            return await asyncio.shield(job.future)
        finally:
            self._leave(job)

    def hash_during(self, path: str, key: Identity) -> _Job | None:
        """Start (or join) hashing a big file for the cache while a download of it goes on;
        hand the result to :meth:`download_ended`. ``None``: nothing to do (cached), or the
        pool is full (a later download tries again). A HEAD, or a download the client
        leaves at once, must not make the server read a whole big file for nobody."""
        if key in self._digests:
            return None
        try:
            return self._join(path, key, for_cache=False)
        except (HashingBusy, HashStopped):  # full, or the server is stopping
            return None

    def download_ended(self, job: _Job, whole: bool) -> None:
        """The download that :meth:`hash_during` started with has ended. Sent ``whole``:
        the hash finishes (the server has read the file for a client anyway). Cut short,
        and nobody else waits for it: it stops at its next block."""
        if whole:
            job.for_cache = True
        self._leave(job)

    def _join(self, path: str, key: Identity, *, for_cache: bool) -> _Job:
        """The hash of ``key`` (started if none runs), with one more waiter."""
        job = self._jobs.get(key)
        if job is None:
            job = self._start(path, key, for_cache=for_cache)
        elif not self._closing.is_set():
            job.stop.clear()  # wanted again (if its thread has not given up yet, it goes on)
        job.waiters += 1
        return job

    def _leave(self, job: _Job) -> None:
        """One waiter fewer: the last one gone, a hash not kept for the cache stops."""
        job.waiters -= 1
        if not job.waiters and not job.for_cache:
            job.stop.set()  # the thread stops at its next block

    def _start(self, path: str, key: Identity, *, for_cache: bool) -> _Job:
        if self._closing.is_set():
            raise HashStopped(path)
        pool = self._small if key[2] <= INLINE_MAX else self._big
        if self._queued[pool] >= self._max_jobs:
            raise HashingBusy(path)
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(pool, self._hash_file, path, key, stop)
        job = _Job(future, stop, for_cache=for_cache)
        self._jobs[key] = job
        self._queued[pool] += 1
        future.add_done_callback(lambda done: self._finished(key, job, pool, done))
        return job

    def _finished(
        self,
        key: Identity,
        job: _Job,
        pool: concurrent.futures.ThreadPoolExecutor,
        future: asyncio.Future[bytes],
    ) -> None:
        self._queued[pool] -= 1
        if self._jobs.get(key) is job:
            del self._jobs[key]
        if future.cancelled():
            return
        if future.exception() is None:  # retrieved either way: a vanished file is no error
            self.store(key, future.result())

    def _hash_file(self, path: str, key: Identity, stop: threading.Event) -> bytes:
        if stop.is_set() or self._closing.is_set():  # left while it was queued
            raise HashStopped(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if identity(os.fstat(fd)) != key:
                raise FileChanged(path)
            hasher = hashlib.sha256()
            while chunk := os.read(fd, CHUNK):
                if stop.is_set() or self._closing.is_set():
                    raise HashStopped(path)
                hasher.update(chunk)
            if identity(os.fstat(fd)) != key:
                raise FileChanged(path)
            return hasher.digest()
        finally:
            os.close(fd)

    def hashing(self) -> int:
        """Hashes queued or running (for /metrics and tests)."""
        return len(self._jobs)

    async def close(self) -> None:
        """Stop every hash (threads notice within one block); queued ones never start.
        Does not wait for the threads: they end on their own a block later."""
        self._closing.set()
        for pool in (self._small, self._big):
            pool.shutdown(wait=False, cancel_futures=True)
        for job in list(self._jobs.values()):
            job.stop.set()
            job.future.cancel()


def _pool(kind: str) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"streamer-hash-{kind}")
