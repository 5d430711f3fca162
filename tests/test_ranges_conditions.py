"""The pure parts of file delivery: Range parsing, validators, preconditions, safe paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamer.conditions import (
    Outcome,
    evaluate_preconditions,
    http_date,
    if_range_allows,
    parse_etags,
    parse_http_date,
    strong_etag,
)
from streamer.paths import clean_parts, resolve_inside
from streamer.ranges import MAX_RANGES, UNSATISFIABLE, ByteRange, parse_range

R = ByteRange


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [R(0, 1)]),
        ("bytes=0-499", [R(0, 500)]),
        ("bytes=500-", [R(500, 1000)]),
        ("bytes=-200", [R(800, 1000)]),
        ("bytes=-5000", [R(0, 1000)]),  # suffix longer than the file: all of it
        ("bytes=900-5000", [R(900, 1000)]),  # last-pos past the end is clamped
        ("bytes=999-999", [R(999, 1000)]),
        ("BYTES=0-1", [R(0, 2)]),  # the unit is case-insensitive
        ("bytes= 0-1 ,\t5-6", [R(0, 2), R(5, 7)]),  # OWS around the commas
        ("bytes=0-1,,5-6", [R(0, 2), R(5, 7)]),  # empty list elements are allowed
        ("bytes=5-6,0-1", [R(5, 7), R(0, 2)]),  # request order is kept
        ("bytes=0-9,5-19", [R(0, 20)]),  # overlapping: merged
        ("bytes=0-9,10-19", [R(0, 20)]),  # touching: merged
        ("bytes=20-29,0-4,2-7", [R(0, 8), R(20, 30)]),  # merged means sorted
        ("bytes=0-0,-1", [R(0, 1), R(999, 1000)]),
        ("bytes=2000-,0-1", [R(0, 2)]),  # unsatisfiable parts are dropped
        ("bytes=4294967296-4294967305", UNSATISFIABLE),
        ("bytes=1000-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=1000-2000,-0", UNSATISFIABLE),
        # ignored: the whole file is sent
        (None, None),
        ("", None),
        ("items=0-1", None),  # unknown unit
        ("bytes 0-1", None),
        ("bytes=", None),
        ("bytes=5-2", None),  # last < first: invalid
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("bytes=0-1,x", None),  # one invalid spec invalidates the header
        ("bytes=+1-2", None),
        ("bytes=1_0-20", None),
        ("bytes=0x10-20", None),
        ("bytes=0-1-2", None),
        ("bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(MAX_RANGES + 1)), None),
        ("bytes=0-1" + " " * 5000, None),  # absurdly long
    ],
)
def test_parse_range(header: str | None, expected: object) -> None:
    assert parse_range(header, 1000) == expected


def test_ranges_past_4_gib_are_exact() -> None:
    size = 5 * 2**30
    assert parse_range("bytes=4294967303-4294967318", size) == [R(4294967303, 4294967319)]
    assert parse_range("bytes=-16", size) == [R(size - 16, size)]
    assert R(4294967303, 4294967319).content_range(size) == "bytes 4294967303-4294967318/5368709120"


def test_max_ranges_are_still_served() -> None:
    header = "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(MAX_RANGES))
    assert len(parse_range(header, 1000)) == MAX_RANGES  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
    ],
)
def test_http_dates_in_all_three_formats(text: str) -> None:
    assert parse_http_date(text) == 784111777
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("text", ["", "yesterday", "Sun, 06 Nov 1994 08:49:37 +0200", "0"])
def test_invalid_http_dates(text: str) -> None:
    assert parse_http_date(text) is None


def test_parse_etags() -> None:
    assert parse_etags('"a", W/"b" ,"c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert parse_etags("*") == [(False, "*")]
    assert parse_etags("a") is None
    assert parse_etags('"a" "b"') is None


def test_strong_etag_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = strong_etag(os.stat(path))
    os.utime(path, ns=(1, 2))
    second = strong_etag(os.stat(path))
    assert second != first
    path.write_bytes(b"two")  # same size...
    os.utime(path, ns=(1, 2))  # ...and the same mtime as before: still a new tag (ctime)
    assert strong_etag(os.stat(path)) != second
    assert first.startswith('"')
    assert first.endswith('"')
    assert not first.startswith("W/")


ETAG = '"abc"'
MTIME = 784111777
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({}, Outcome.PROCEED),
        ({"If-Match": ETAG}, Outcome.PROCEED),
        ({"If-Match": '"x", "abc"'}, Outcome.PROCEED),
        ({"If-Match": "*"}, Outcome.PROCEED),
        ({"If-Match": '"x"'}, Outcome.PRECONDITION_FAILED),
        ({"If-Match": 'W/"abc"'}, Outcome.PRECONDITION_FAILED),  # strong comparison
        ({"If-Match": "garbage"}, Outcome.PRECONDITION_FAILED),
        ({"If-Unmodified-Since": DATE}, Outcome.PROCEED),
        ({"If-Unmodified-Since": EARLIER}, Outcome.PRECONDITION_FAILED),
        ({"If-Unmodified-Since": "nonsense"}, Outcome.PROCEED),  # invalid date: ignored
        # If-Match present: If-Unmodified-Since is not evaluated (step 2 only without it)
        ({"If-Match": ETAG, "If-Unmodified-Since": EARLIER}, Outcome.PROCEED),
        ({"If-None-Match": ETAG}, Outcome.NOT_MODIFIED),
        ({"If-None-Match": 'W/"abc"'}, Outcome.NOT_MODIFIED),  # weak comparison
        ({"If-None-Match": "*"}, Outcome.NOT_MODIFIED),
        ({"If-None-Match": '"x"'}, Outcome.PROCEED),
        ({"If-Modified-Since": DATE}, Outcome.NOT_MODIFIED),
        ({"If-Modified-Since": EARLIER}, Outcome.PROCEED),
        ({"If-Modified-Since": "nonsense"}, Outcome.PROCEED),
        # If-None-Match present: If-Modified-Since is ignored (step 4 only without it)
        ({"If-None-Match": '"x"', "If-Modified-Since": DATE}, Outcome.PROCEED),
        # failing If-Match wins over a matching If-None-Match (step 1 before step 3)
        ({"If-Match": '"x"', "If-None-Match": ETAG}, Outcome.PRECONDITION_FAILED),
        ({"If-Unmodified-Since": EARLIER, "If-None-Match": ETAG}, Outcome.PRECONDITION_FAILED),
    ],
)
def test_preconditions_in_rfc_order(headers: dict[str, str], outcome: Outcome) -> None:
    assert evaluate_preconditions(headers, ETAG, MTIME) is outcome


def test_if_none_match_on_unsafe_method_fails() -> None:
    outcome = evaluate_preconditions({"If-None-Match": "*"}, ETAG, MTIME, safe_method=False)
    assert outcome is Outcome.PRECONDITION_FAILED


@pytest.mark.parametrize(
    ("header", "now", "allowed"),
    [
        (None, MTIME + 100, True),
        (ETAG, MTIME + 100, True),
        ('"other"', MTIME + 100, False),
        ('W/"abc"', MTIME + 100, False),  # weak tags never match If-Range
        (DATE, MTIME + 100, True),  # exact date
        (EARLIER, MTIME + 100, False),  # an older date is not a match
        ("Sun, 06 Nov 1994 08:49:38 GMT", MTIME + 100, False),  # nor a newer one
        (DATE, MTIME + 0.5, False),  # modified less than a second ago: date is weak
        ("garbage", MTIME + 100, False),
    ],
)
def test_if_range(header: str | None, now: float, allowed: bool) -> None:
    assert if_range_allows(header, ETAG, file_stat(MTIME + 0.25, MTIME + 0.25), now) is allowed


def file_stat(mtime: float, ctime: float) -> os.stat_result:
    """A stat result with just the times that If-Range looks at."""
    return os.stat_result((0o100644, 1, 1, 1, 0, 0, 10, mtime, mtime, ctime))


@pytest.mark.parametrize(
    ("mtime", "ctime", "now", "allowed"),
    [
        (MTIME + 0.9, MTIME + 0.9, MTIME + 1.5, False),  # written 0.6 s ago, same second
        (MTIME + 0.9, MTIME + 0.9, MTIME + 2.0, True),
        (MTIME + 0.1, MTIME + 50, MTIME + 100, False),  # rewritten later, mtime set back
    ],
)
def test_if_range_date_needs_a_settled_unchanged_file(
    mtime: float, ctime: float, now: float, allowed: bool
) -> None:
    assert if_range_allows(DATE, ETAG, file_stat(mtime, ctime), now) is allowed


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../x",
        "a/../../x",
        "./x",
        ".hidden",
        "a/.git/config",
        "/etc/passwd",
        "a\\..\\b",
        "C:/x",
        "c:x",
        "a\x00b",
        "a\nb",
        "a//b",
        "a/",
        "x" * 256,
        "a/" * 600,
        "\udc80\ud800",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    assert clean_parts(path) is None


def test_plain_paths_are_split() -> None:
    assert clean_parts("") == []
    assert clean_parts("a/b c/é.txt") == ["a", "b c", "é.txt"]
    assert clean_parts("x" * 255) == ["x" * 255]


def test_symlinks_must_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("x")
    (root / ".secret").write_text("x")
    (tmp_path / "outside").write_text("x")
    (root / "inside-link").symlink_to(root / "sub" / "f")
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "to-dotfile").symlink_to(root / ".secret")
    (root / "dir-escape").symlink_to(tmp_path)
    real_root = str(root.resolve())
    assert resolve_inside(real_root, "sub/f") == str(root / "sub" / "f")
    assert resolve_inside(real_root, "inside-link") == str(root / "sub" / "f")
    assert resolve_inside(real_root, "escape") is None
    assert resolve_inside(real_root, "to-dotfile") is None
    assert resolve_inside(real_root, "dir-escape/outside") is None
    assert resolve_inside(real_root, "") == real_root
