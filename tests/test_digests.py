"""``DigestCache``: hashes in pools of their own, bounded, shared per file version, stopped
when nobody wants them. Real files, real threads; every wait bounded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamer.digests import MAX_JOBS, DigestCache, FileChanged, HashingBusy, identity

from .helpers import wait_for

HUGE = 64 * 1024**3  # sparse: about thirty seconds of hashing, were it ever to run to the end


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


@pytest.fixture
async def cache() -> AsyncIterator[DigestCache]:
    digests = DigestCache()
    yield digests
    await digests.close()


async def test_digest_is_hashlibs_and_cached(cache: DigestCache, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    key = identity(os.stat(path))
    digest = await cache.digest(str(path), key)
    assert digest == hashlib.sha256(path.read_bytes()).digest()
    assert cache.cached(key) == digest
    assert cache.hashing() == 0


async def test_concurrent_requests_share_one_hash(cache: DigestCache, tmp_path: Path) -> None:
    path = sparse(tmp_path / "big.iso", 256 * 1024**2)
    key = identity(os.stat(path))
    waiting = [asyncio.ensure_future(cache.digest(str(path), key)) for _ in range(5)]
    await asyncio.sleep(0)  # let them all register: one job, five waiters
    assert cache.hashing() == 1
    digests = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert len(set(digests)) == 1


async def test_a_full_pool_refuses_instead_of_queueing(cache: DigestCache, tmp_path: Path) -> None:
    paths = [sparse(tmp_path / f"huge{n}.iso", HUGE) for n in range(MAX_JOBS + 1)]
    for path in paths[:MAX_JOBS]:
        assert cache.hash_during(str(path), identity(os.stat(path))) is not None
    assert cache.hashing() == MAX_JOBS
    extra = paths[MAX_JOBS]
    assert cache.hash_during(str(extra), identity(os.stat(extra))) is None  # not started
    assert cache.hashing() == MAX_JOBS
    with pytest.raises(HashingBusy):
        await cache.digest(str(extra), identity(os.stat(extra)))
    small = tmp_path / "small.txt"  # the other pool is free: small files are never held up
    small.write_bytes(b"small\n")
    started = time.monotonic()
    assert (
        await cache.digest(str(small), identity(os.stat(small)))
        == hashlib.sha256(b"small\n").digest()
    )
    assert time.monotonic() - started < 0.5


async def test_a_big_hash_nobody_waits_for_stops(cache: DigestCache, tmp_path: Path) -> None:
    path = sparse(tmp_path / "huge.iso", HUGE)
    waiting = asyncio.ensure_future(cache.digest(str(path), identity(os.stat(path))))
    await wait_for(lambda: cache.hashing() == 1)
    waiting.cancel()
    await wait_for(lambda: cache.hashing() == 0, 2)


async def test_a_hash_for_a_download_sent_whole_finishes_for_the_cache(
    cache: DigestCache, tmp_path: Path
) -> None:
    path = sparse(tmp_path / "big.iso", 512 * 1024**2)
    key = identity(os.stat(path))
    job = cache.hash_during(str(path), key)
    assert job is not None
    waiting = asyncio.ensure_future(cache.digest(str(path), key))  # joins it
    await asyncio.sleep(0)
    waiting.cancel()  # a ?hash= client leaves: the download still wants it
    cache.download_ended(job, whole=True)
    await wait_for(lambda: cache.cached(key) is not None, 10)  # finished for the cache


async def test_a_hash_for_a_download_cut_short_stops(cache: DigestCache, tmp_path: Path) -> None:
    """A client that asks for a big file and leaves at once must not cost the server a
    read of the whole file; another download still under way keeps it going."""
    path = sparse(tmp_path / "huge.iso", HUGE)
    key = identity(os.stat(path))
    first, second = cache.hash_during(str(path), key), cache.hash_during(str(path), key)
    assert first is not None
    assert second is first
    assert cache.hashing() == 1
    cache.download_ended(first, whole=False)
    assert not first.stop.is_set()  # the second download still goes on
    cache.download_ended(second, whole=False)
    await wait_for(lambda: cache.hashing() == 0, 2)
    assert cache.cached(key) is None


async def test_a_file_that_changes_while_hashed_gives_no_digest(
    cache: DigestCache, tmp_path: Path
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    key = identity(os.stat(path))
    path.write_bytes(b"new!")
    with pytest.raises(FileChanged):
        await cache.digest(str(path), key)
    assert cache.cached(key) is None


async def test_close_stops_hashing_at_once(tmp_path: Path) -> None:
    cache = DigestCache()
    paths = [sparse(tmp_path / f"huge{n}.iso", HUGE) for n in range(3)]
    for path in paths:
        assert cache.hash_during(str(path), identity(os.stat(path))) is not None
    await wait_for(lambda: cache.hashing() == 3)
    started = time.monotonic()
    await cache.close()
    await wait_for(lambda: cache.hashing() == 0, 1)
    assert time.monotonic() - started < 1
