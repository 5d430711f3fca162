"""``Range`` request header (RFC 9110 section 14): parsing and the server's policy.

Pure functions, no I/O. :func:`parse_range` turns a header and the size of
the representation into one of three answers:

* ``None``: ignore the header and send the whole representation (``200``).
  That is what RFC 9110 requires for an unknown range unit or an invalid
  range-set, and what this server chooses for requests with more than
  :data:`MAX_RANGES` ranges (like nginx's ``max_ranges``).
* :data:`UNSATISFIABLE`: ``416`` with ``Content-Range: bytes */SIZE``.
* a non-empty list of :class:`ByteRange`: one of them means a plain ``206``,
  several mean ``multipart/byteranges``. Ranges that overlap or touch are
  merged (RFC 9110 section 14.2 allows coalescing), so a request can never
  make the server send a byte twice; otherwise the order of the request is
  kept.
"""

from __future__ import annotations

import itertools
from typing import Final, NamedTuple

MAX_RANGES: Final = 32
MAX_HEADER: Final = 4096  # longer Range headers are ignored rather than parsed
_DIGITS: Final = frozenset("0123456789")


class ByteRange(NamedTuple):
    """Bytes ``start`` up to, not including, ``stop``."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class _Unsatisfiable:
    def __repr__(self) -> str:
        return "UNSATISFIABLE"


UNSATISFIABLE: Final = _Unsatisfiable()


def _number(text: str) -> int | None:
    """1*DIGIT, nothing else (no sign, no spaces, no underscores)."""
    if not text or not _DIGITS.issuperset(text):
        return None
    return int(text)


def _spec(spec: str, size: int) -> ByteRange | bool | None:
    """One range-spec: a clamped range, ``None`` if unsatisfiable, ``False`` if invalid."""
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        return False
    if not first_text:  # suffix-range: the last N bytes
        suffix = _number(last_text)
        if suffix is None:
            return False
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(0, size - suffix), size)
    first = _number(first_text)
    if first is None:
        return False
    if last_text:
        last = _number(last_text)
        if last is None or last < first:
            return False
        stop = min(last + 1, size)
    else:
        stop = size
    if first >= size:
        return None
    return ByteRange(first, stop)


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Merge ranges that overlap or touch; keep the request's order when none do."""
    ordered = sorted(ranges)
    if all(a.stop < b.start for a, b in itertools.pairwise(ordered)):
        return ranges
    merged = [ordered[0]]
    for current in ordered[1:]:
        last = merged[-1]
        if current.start <= last.stop:
            merged[-1] = ByteRange(last.start, max(last.stop, current.stop))
        else:
            merged.append(current)
    return merged


def parse_range(header: str | None, size: int) -> list[ByteRange] | _Unsatisfiable | None:
    """The ranges to send for ``Range: header`` on a representation of ``size`` bytes."""
    if not header or len(header) > MAX_HEADER:
        return None
    unit, eq, range_set = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [part.strip(" \t") for part in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # 1#element allows empty list elements
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for spec in specs:
        result = _spec(spec, size)
        if result is False:
            return None
        if isinstance(result, ByteRange):
            ranges.append(result)
    if not ranges:
        return UNSATISFIABLE
    return _coalesce(ranges)
