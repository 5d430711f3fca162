"""Validators and conditional requests (RFC 9110 sections 8.8 and 13). Pure, no I/O.

:func:`evaluate_preconditions` applies ``If-Match``, ``If-Unmodified-Since``,
``If-None-Match`` and ``If-Modified-Since`` in the order of section 13.2.2;
:func:`if_range_allows` decides whether a ``Range`` still applies.
"""

from __future__ import annotations

import calendar
import functools
import os
import re
from collections.abc import Mapping
from email.utils import formatdate, parsedate_tz
from enum import Enum
from typing import Final

_ENTITY_TAG: Final = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


class Outcome(Enum):
    PROCEED = 200
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412


def strong_etag(stat: os.stat_result) -> str:
    """A strong entity tag: changes whenever the file is replaced, resized or written.

    ``ctime`` is in it because ``mtime`` alone can be set back (``cp -p``,
    ``touch -d``) after a same-size rewrite; the price is a new tag after a
    ``chmod``, which only costs a download.
    """
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ctime_ns:x}"'


def http_date(seconds: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return _http_date(int(seconds))


@functools.lru_cache(maxsize=4096)  # Last-Modified of the files served most
def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def parse_http_date(text: str | None) -> int | None:
    """Seconds since the epoch of an HTTP-date (any of the three formats), else ``None``."""
    if not text:
        return None
    parts = parsedate_tz(text.strip())
    if parts is None or parts[9] not in (0, None):  # HTTP dates are always GMT
        return None
    year, month, day, hour, minute, second = parts[:6]
    try:
        return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None


def parse_etags(header: str) -> list[tuple[bool, str]] | None:
    """``[(weak, opaque-tag), ...]`` of an ``If-Match``/``If-None-Match`` list; ``None`` if
    malformed. ``*`` is returned as ``[(False, "*")]``."""
    text = header.strip()
    if text == "*":
        return [(False, "*")]
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(text):
        match = _ENTITY_TAG.match(text, position)
        if match is None:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def _matches(header: str, etag: str, *, weak: bool) -> bool | None:
    """Does the list in ``header`` match ``etag``? ``None`` when the header is malformed."""
    tags = parse_etags(header)
    if tags is None:
        return None
    return any(tag == "*" or (tag == etag and (weak or not is_weak)) for is_weak, tag in tags)


def evaluate_preconditions(
    headers: Mapping[str, str], etag: str, mtime: int, *, safe_method: bool = True
) -> Outcome:
    """RFC 9110 section 13.2.2, steps 1 to 4, for a resource that exists.

    ``mtime`` is the Last-Modified time in whole seconds. A malformed
    ``If-Match`` fails (nothing can match it); a malformed ``If-None-Match``
    and invalid dates are ignored, as the RFC says.
    """
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches(if_match, etag, weak=False):
            return Outcome.PRECONDITION_FAILED
    else:
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and mtime > since:
            return Outcome.PRECONDITION_FAILED
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, weak=True):
            return Outcome.NOT_MODIFIED if safe_method else Outcome.PRECONDITION_FAILED
    elif safe_method:
        since = parse_http_date(headers.get("If-Modified-Since"))
        if since is not None and mtime <= since:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


def if_range_allows(header: str | None, etag: str, stat: os.stat_result, now: float) -> bool:
    """Whether a ``Range`` applies given ``If-Range`` (RFC 9110 section 13.1.5).

    An entity tag must match strongly (a weak one never does). A date must
    equal Last-Modified exactly, and only counts when it is a strong
    validator: the file has not changed in any way (``mtime`` and ``ctime``)
    since that second, and that was at least one second ago, so that a second
    write within the same second cannot hide behind the same date.
    """
    if header is None:
        return True
    text = header.strip()
    if text.startswith(('"', "W/")):
        return text == etag
    date = parse_http_date(text)
    if date is None or date != int(stat.st_mtime):
        return False
    changed = max(stat.st_mtime, stat.st_ctime)
    return int(changed) == date and now - changed >= 1
