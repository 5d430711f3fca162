"""Precompressed sidecars (``x.br``, ``x.gz`` next to ``x``) and ``Accept-Encoding``.

Looking for sidecars on every request would cost two failed opens per
request, so each folder's names are remembered until the folder's mtime
changes (creating, deleting or renaming an entry changes it). A folder
changed less than a second ago is listed again on every request: its mtime
could change again within the same clock tick without looking different.
"""

from __future__ import annotations

import os
import time
from typing import Final

SIDECARS: Final = (("br", ".br"), ("gzip", ".gz"))  # preferred first when equally acceptable
MAX_FOLDERS: Final = 1024


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


def preferred_codings(accept_encoding: str | None, available: list[str]) -> list[str]:
    """The ``available`` codings the client accepts, best first."""
    if not accept_encoding or not available:
        return []
    accepted = accepted_codings(accept_encoding)
    ranked = []
    for order, coding in enumerate(available):
        q = accepted.get(coding, accepted.get("*", 0.0))
        if q > 0:
            ranked.append((-q, order, coding))
    return [coding for _, _, coding in sorted(ranked)]


class SidecarIndex:
    """Which sidecar names exist next to a file, from a cached listing of its folder."""

    def __init__(self) -> None:
        self._folders: dict[str, tuple[int, frozenset[str]]] = {}

    def codings(self, real_path: str) -> list[str]:
        """The codings (in preference order) with a sidecar next to ``real_path``."""
        folder, name = os.path.split(real_path)
        names = self._names(folder)
        return [coding for coding, suffix in SIDECARS if name + suffix in names]

    def _names(self, folder: str) -> frozenset[str]:
        try:
            mtime_ns = os.stat(folder).st_mtime_ns
        except OSError:
            return frozenset()
        cached = self._folders.get(folder)
        if cached is not None and cached[0] == mtime_ns:
            return cached[1]
        try:
            names = frozenset(os.listdir(folder))
        except OSError:
            return frozenset()
        if time.time_ns() - mtime_ns >= 1_000_000_000:  # settled: safe to remember
            if len(self._folders) >= MAX_FOLDERS:
                self._folders.clear()
            self._folders[folder] = (mtime_ns, names)
        return names
