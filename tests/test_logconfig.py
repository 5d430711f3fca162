"""Batched log output: every line arrives, in order, and warnings are not held back."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from streamer.logconfig import (
    FLUSH_INTERVAL,
    MAX_PENDING,
    BatchingHandler,
    FastFormatter,
    direct_handlers,
)

from .conftest import StartServer
from .helpers import host_port, read_until, wait_for

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
    logger.warning("second")  # by the flusher thread, not waiting for the interval
    await wait_for(lambda: messages(stream) == ["first", "second"], timeout=FLUSH_INTERVAL * 0.75)


def test_a_stuck_output_never_blocks_whoever_logs() -> None:
    """A stderr pipe nobody reads: logging goes on at once, at most MAX_PENDING bytes
    wait, and once the output moves again the next batch says how many lines were
    dropped (before, the writing thread held the lock that every logger needs)."""
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "rb")
    stream = os.fdopen(write_end, "w", buffering=1)
    handler = BatchingHandler(stream)
    try:
        line = "x" * 1000
        started = time.monotonic()
        for _ in range(20 * MAX_PENDING // 1000):  # 80 MB: far past the pipe and the bound
            handler.emit_info("test.batch", line)
        assert time.monotonic() - started < 10  # it did not block (a blocked one never ends)
        with handler.lock:  # type: ignore[union-attr]
            assert handler._size <= MAX_PENDING
        received = b""
        while b"log lines dropped" not in received:
            handler._wake.set()  # the flusher writes the batch with the marker once it can
            received += reader.read1(1 << 20)
    finally:
        reader.close()  # first: what close() writes then fails (EPIPE) instead of blocking
        handler.close()
        stream.close()


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


def test_a_line_the_stream_cannot_encode_does_not_take_its_batch_with_it(
    tmp_path: Path,
) -> None:
    with open(tmp_path / "ascii.log", "w", encoding="ascii") as stream:
        handler = BatchingHandler(stream)
        handler.emit_info("test.batch", "before")
        handler.emit_info("test.batch", "caf\u00e9 \udcff")  # what a bad header can hold
        handler.emit_info("test.batch", "after")
        handler.close()
    assert (tmp_path / "ascii.log").read_text("ascii").splitlines() == [
        " INFO test.batch: before",
        " INFO test.batch: caf\\xe9 \\udcff",
        " INFO test.batch: after",
    ]


async def test_a_client_cannot_forge_or_stop_access_log_lines(
    start_server: StartServer,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # what the CLI configures (tests start at WARNING)
    own_log = tmp_path / "streamer.log"
    server = await start_server(log_file=own_log)
    agent = b'caf\xc3\xa9 \xff "quoted" \\ end'  # UTF-8, a byte that is not, a quote
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nUser-Agent: %s\r\n\r\n" % agent
    reader, writer = await asyncio.open_connection(*host_port(server))
    writer.write(request)
    await read_until(reader, b"}\n")
    writer.close()
    async with http.get(server + "/healthz", headers={"User-Agent": "polite"}) as response:
        assert response.status == 200

    def both_logged() -> bool:
        return '"polite"' in own_log.read_text("utf-8")

    await wait_for(both_logged)
    lines = [line for line in own_log.read_text("ascii").splitlines() if "/healthz" in line]
    assert len(lines) == 2
    assert lines[0].endswith(r'"caf\u00e9 \udcff \"quoted\" \\ end"')
    assert '"GET /healthz HTTP/1.1" 200 ' in lines[0]
