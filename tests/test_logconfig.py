"""Batched log output: every line arrives, in order, and warnings are not held back."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from streamer.logconfig import FLUSH_INTERVAL, BatchingHandler, FastFormatter, direct_handlers

from .helpers import wait_for

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) test\.batch: (.*)")


@pytest.fixture
def batched() -> Iterator[tuple[logging.Logger, BatchingHandler, io.StringIO]]:
    stream = io.StringIO()
    handler = BatchingHandler(stream)
    handler.setFormatter(FastFormatter())
    logger = logging.getLogger("test.batch")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)
    handler.close()
    logger.propagate = True


def messages(stream: io.StringIO) -> list[str]:
    found = []
    for line in stream.getvalue().splitlines():
        match = LINE.fullmatch(line)
        assert match, line
        found.append(match[2])
    return found


async def test_info_lines_are_written_together_within_the_interval(
    batched: tuple[logging.Logger, BatchingHandler, io.StringIO],
) -> None:
    logger, _, stream = batched
    for n in range(100):
        logger.info("line %d", n)
    assert stream.getvalue() == ""  # held back...
    await wait_for(lambda: len(messages(stream)) == 100, timeout=FLUSH_INTERVAL * 10)
    assert messages(stream) == [f"line {n}" for n in range(100)]  # ...then all, in order


async def test_a_warning_flushes_everything_before_it_at_once(
    batched: tuple[logging.Logger, BatchingHandler, io.StringIO],
) -> None:
    logger, _, stream = batched
    logger.info("first")
    logger.warning("second")
    assert messages(stream) == ["first", "second"]


async def test_direct_lines_look_like_records(
    batched: tuple[logging.Logger, BatchingHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, stream = batched
    monkeypatch.setattr(logger, "handlers", [handler])  # without pytest's capture handlers
    assert direct_handlers(logger) == [handler]
    handler.emit_info("test.batch", "direct")
    logger.info("record")
    handler.flush()
    assert messages(stream) == ["direct", "record"]


def test_direct_handler_only_when_nothing_else_listens(
    batched: tuple[logging.Logger, BatchingHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, _ = batched
    monkeypatch.setattr(logger, "handlers", [handler])
    other = logging.StreamHandler(io.StringIO())
    logger.addHandler(other)
    assert direct_handlers(logger) is None
    logger.removeHandler(other)
    assert direct_handlers(logger) == [handler]
    logger.addFilter(bool)
    assert direct_handlers(logger) is None
    logger.removeFilter(bool)


def test_close_writes_what_is_left() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.makeLogRecord({"msg": "last words", "levelno": logging.INFO}))
    handler.close()
    assert stream.getvalue() == "last words\n"


def test_access_lines_reach_every_batching_handler(
    batched: tuple[logging.Logger, BatchingHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, stream = batched
    second_stream = io.StringIO()
    second = BatchingHandler(second_stream)
    second.setFormatter(FastFormatter())
    monkeypatch.setattr(logger, "handlers", [handler, second])
    assert direct_handlers(logger) == [handler, second]
    for target in direct_handlers(logger) or []:
        target.emit_info("test.batch", "to both")
    handler.flush()
    second.close()
    assert messages(stream) == messages(second_stream) == ["to both"]
