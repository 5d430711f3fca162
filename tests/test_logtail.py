"""The tail's pure parts, table-tested: splitting appended bytes into lines, reading the
last lines backwards, and line ids."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.sources.logtail import (
    BackwardLines,
    LineSplitter,
    TailEvent,
    last_line_end,
    last_lines,
    line_start_at_or_after,
    parse_line_id,
)


def split(pieces: list[bytes], max_line: int = 10, inode: int = 7) -> list[tuple[str, str, str]]:
    splitter = LineSplitter(0, max_line)
    events: list[TailEvent] = []
    for piece in pieces:
        events += splitter.feed(inode, piece)
    return [(e.kind, e.id or "", e.data) for e in events]


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([b"a\n"], [("message", "7-2", "a")]),
        ([b"a\nbb\n"], [("message", "7-2", "a"), ("message", "7-5", "bb")]),
        ([b"par", b"tial\n"], [("message", "7-8", "partial")]),  # held until its newline
        ([b"no nl"], []),
        ([b"crlf\r\n"], [("message", "7-6", "crlf")]),
        ([b"crlf\r", b"\n"], [("message", "7-6", "crlf")]),  # CR and LF in two writes
        ([b"\n"], [("message", "7-1", "")]),  # an empty line is a line
        ([b"\xff\xfe\n"], [("message", "7-3", "\ufffd\ufffd")]),
        ([b"0123456789\n"], [("message", "7-11", "0123456789")]),  # exactly max_line
        ([b"0123456789\r\n"], [("message", "7-12", "0123456789")]),  # max_line + CR
        # longer: cut at max_line (id after the cut), the rest skipped up to its newline
        ([b"0123456789AB\nnext\n"], [("cut", "7-10", "0123456789"), ("message", "7-18", "next")]),
        (
            [b"01234567", b"89ABCD", b"EF\nok\n"],
            [("cut", "7-10", "0123456789"), ("message", "7-20", "ok")],
        ),
    ],
)
def test_line_splitter(pieces: list[bytes], expected: list[tuple[str, str, str]]) -> None:
    assert split(pieces) == expected


def test_splitter_offsets_and_flush() -> None:
    splitter = LineSplitter(100, max_line=64)
    assert splitter.feed(1, b"one\ntw") == [TailEvent("message", "1-104", "one")]
    assert (splitter.offset, splitter.pending) == (104, 2)
    assert splitter.flush(1) == [TailEvent("message", "1-106", "tw")]  # the file ended there
    assert (splitter.offset, splitter.pending) == (106, 0)
    assert splitter.flush(1) == []
    splitter.reset(0)
    assert splitter.feed(2, b"x\n") == [TailEvent("message", "2-2", "x")]


@pytest.fixture
def log_fd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    yield fd, path
    os.close(fd)


def lines_of(events: list[TailEvent]) -> list[str]:
    return [e.data for e in events]


def test_last_lines_counts_back_from_the_stop(log_fd: tuple[int, Path]) -> None:
    fd, path = log_fd
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(100)) + b"partial")
    stop = last_line_end(fd, path.stat().st_size)
    assert stop == path.stat().st_size - len(b"partial")
    events = last_lines(fd, 9, stop, 3)
    assert lines_of(events) == ["line 97", "line 98", "line 99"]
    assert events[-1].id == f"9-{stop}"
    assert lines_of(last_lines(fd, 9, stop, 1000)) == [f"line {n}" for n in range(100)]
    assert last_lines(fd, 9, 0, 5) == []


def test_last_lines_across_read_blocks_and_with_a_needle(log_fd: tuple[int, Path]) -> None:
    fd, path = log_fd
    body = b"".join(
        b"%06d %s\n" % (n, b"ERROR" if n % 1000 == 0 else b"x" * 100) for n in range(5000)
    )
    path.write_bytes(body)
    events = last_lines(fd, 1, len(body), 3, needle="error")
    assert lines_of(events) == ["002000 ERROR", "003000 ERROR", "004000 ERROR"]
    offsets = [int(e.id.split("-")[1]) for e in events if e.id]
    assert all(body[offset - 1 : offset] == b"\n" for offset in offsets)


def test_last_lines_cuts_long_lines_like_the_live_tail(log_fd: tuple[int, Path]) -> None:
    fd, path = log_fd
    path.write_bytes(b"short\n" + b"y" * 50 + b"\r\nend\r\n")
    events = last_lines(fd, 1, path.stat().st_size, 3, max_line=20)
    assert [(e.kind, e.data) for e in events] == [
        ("message", "short"),
        ("cut", "y" * 20),
        ("message", "end"),
    ]
    assert events[1].id == "1-26"  # after the cut, as live


def test_line_start_at_or_after(log_fd: tuple[int, Path]) -> None:
    fd, path = log_fd
    path.write_bytes(b"ab\ncdef\ng")
    assert [line_start_at_or_after(fd, n) for n in (0, 1, 3, 4, 8, 9)] == [0, 3, 3, 8, 8, 9]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12-34", (12, 34)),
        ("0-0", (0, 0)),
        ("12", None),
        ("-34", None),
        ("12-", None),
        ("a-1", None),
        ("1-\u0662", None),  # a digit, but not an ASCII one
        ("1" * 21 + "-" + "1" * 21, None),
    ],
)
def test_parse_line_id(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_line_id(text) == expected


@pytest.mark.parametrize("seed", range(5))
def test_backward_lines_are_the_live_lines(log_fd: tuple[int, Path], seed: int) -> None:
    """Read backwards in blocks (lines spanning blocks, longer than ``max_line``, ``\\r\\n``,
    a partial line at the end), the lines are exactly what the live splitter makes."""
    fd, path = log_fd
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 5, 99, 100, 101, 3000, 70_000, 200_000]) for _ in range(60)]
    body = b"".join(
        rng.choice([b"a", b"\r", b"\xff"]) * size + rng.choice([b"\n", b"\r\n"]) for size in sizes
    )
    path.write_bytes(body + b"partial")
    splitter = LineSplitter(0, max_line=100)
    live = splitter.feed(3, body + b"partial")
    stop = last_line_end(fd, len(body) + 7)
    assert last_lines(fd, 3, stop, 10_000, max_line=100) == live
    reader = BackwardLines(fd, 3, stop, max_line=100)
    backwards: list[TailEvent] = []
    while (events := reader.next_block()) is not None:
        assert len(reader._head) <= 102  # a long line costs max_line, not its length
        backwards += events
    assert backwards == live[::-1]


def test_backward_lines_stop_at_the_scan_budget(log_fd: tuple[int, Path]) -> None:
    fd, path = log_fd
    path.write_bytes(b"old line\n" + b"x" * 1000 + b"\nnew\n")
    assert lines_of(last_lines(fd, 1, 1014, 5)) == ["old line", "x" * 1000, "new"]
    reader = BackwardLines(fd, 1, 1014, scan=100)  # the long line starts before the budget
    assert [e.data for e in reader.next_block() or []] == ["new"]
    assert reader.next_block() is None
