"""The contents of small, settled files, kept in memory and checked with one ``stat``.

Small files are the hot path: serving one from scratch costs an ``open``,
a ``readlink`` (the containment check), an ``fstat``, a ``pread`` and a
``close``. A cached file costs one ``stat`` of its path, compared with the
stamp ``(device, inode, size, mtime_ns, ctime_ns)`` it had when it was read
and checked; any write, replacement or symlink change makes them differ and
the file is opened again the slow, checked way. (``ctime`` is there because
``mtime`` can be set back by ``touch -d`` or ``cp -p``; ``ctime`` cannot.)

Only *settled* files are kept: changed at least a second ago. A file
rewritten twice within one clock tick with the same size would keep its
stamp, so a file that is still changing is always read afresh.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

Stamp = tuple[int, int, int, int, int]


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


MAX_FILE: Final = 64 * 1024
MAX_TOTAL: Final = 32 * 1024 * 1024
MAX_ENTRIES: Final = 10_000
SETTLED_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class CachedFile:
    candidate: str  # the path as asked for, joined to the root: what gets stat'ed
    path: str  # the real path it resolved to when it was checked
    stat: os.stat_result
    body: bytes

    @property
    def stamp(self) -> Stamp:
        return stamp(self.stat)


class SmallFileCache:
    """LRU of :class:`CachedFile` by the user's path, bounded in bytes."""

    def __init__(self, max_total: int = MAX_TOTAL) -> None:
        self._files: OrderedDict[str, CachedFile] = OrderedDict()
        self._total = 0
        self._max_total = max_total

    def get(self, user_path: str) -> CachedFile | None:
        cached = self._files.get(user_path)
        if cached is None:
            return None
        try:
            st = os.stat(cached.candidate)
        except OSError:
            st = None
        if st is None or stamp(st) != cached.stamp:
            self._drop(user_path)
            return None
        self._files.move_to_end(user_path)
        return cached

    @staticmethod
    def worth_keeping(st: os.stat_result) -> bool:
        changed = max(st.st_mtime_ns, st.st_ctime_ns)
        return st.st_size <= MAX_FILE and time.time_ns() - changed >= SETTLED_NS

    def put(self, user_path: str, cached: CachedFile) -> None:
        self._drop(user_path)
        self._files[user_path] = cached
        self._total += len(cached.body)
        while self._total > self._max_total or len(self._files) > MAX_ENTRIES:
            oldest = next(iter(self._files))
            self._drop(oldest)

    def _drop(self, user_path: str) -> None:
        cached = self._files.pop(user_path, None)
        if cached is not None:
            self._total -= len(cached.body)

    def __len__(self) -> int:
        return len(self._files)
