"""Logging for the server process: one line per record, written in batches.

An access-log line per request written with one ``write(2)`` each costs a
system call per request and, with the standard formatter's ``strftime``,
about a sixth of a small-file request's time. Here lines are collected and
written together by a background thread: at once for warnings and errors
and when 64 KiB have gathered, otherwise at the latest
:data:`FLUSH_INTERVAL` seconds after the first waiting line. Everything left
is written when the process exits.

Whoever logs never waits for the output: a stderr pipe nobody reads (or a
full disk) blocks only that thread. Meanwhile at most :data:`MAX_PENDING`
bytes wait; lines past that are dropped, and the next batch says how many.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Final, TextIO

FLUSH_INTERVAL: Final = 0.2
FLUSH_BYTES: Final = 64 * 1024
MAX_PENDING: Final = 4 * 1024 * 1024  # lines waiting while the output is stuck, at most
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class FastFormatter(logging.Formatter):
    """``%(asctime)s`` computed once per second instead of once per record."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"


class BatchingHandler(logging.Handler):
    """Collects formatted lines and writes them to ``stream`` in batches."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._dropped = 0  # lines dropped since the last batch: the output was stuck
        self._writing = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()
        self._urgent = False
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._append(line, record.levelno)

    def emit_info(self, name: str, message: str) -> None:
        """What ``logging.getLogger(name).info(message)`` would write, without a LogRecord
        (for the access log: one line per request)."""
        formatter = self.formatter
        stamp = formatter.stamp(time.time()) if isinstance(formatter, FastFormatter) else ""
        self._append(f"{stamp} INFO {name}: {message}\n", logging.INFO)

    def _append(self, line: str, levelno: int) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            if self._size + len(line) > MAX_PENDING:
                self._dropped += 1
                return
            self._lines.append(line)
            self._size += len(line)
            urgent = levelno >= logging.WARNING or self._size >= FLUSH_BYTES
            first = len(self._lines) == 1
            if urgent:
                self._urgent = True
        if urgent or first:
            self._wake.set()

    def flush(self) -> None:
        """Write what waits, in this thread (the flusher's, or at exit)."""
        with self._writing:
            with self.lock:  # type: ignore[union-attr]
                if not self._lines and not self._dropped:
                    return
                text = "".join(self._lines)
                if self._dropped:
                    text += f"{self._dropped} log lines dropped: the log output did not keep up\n"
                self._lines.clear()
                self._size = 0
                self._dropped = 0
            try:  # outside the lock: a stuck stream never holds up whoever logs
                self.stream.write(text)
                self.stream.flush()
            except UnicodeEncodeError:  # a stream that cannot take every character
                self._write_escaped(text)
            except (OSError, ValueError):  # the stream is gone (closed pipe, shutdown)
                pass

    def _write_escaped(self, text: str) -> None:
        """Write ``text`` with what the stream's encoding cannot take escaped, so one line
        never takes the rest of its batch with it."""
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            self.stream.flush()
        except (OSError, ValueError, LookupError):
            pass

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if not self._urgent:  # let the batch gather (a warning ends the wait)
                self._wake.wait(FLUSH_INTERVAL)
                self._wake.clear()
            self._urgent = False
            self.flush()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()
        super().close()


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Root logging at ``level`` (``"info"``...) through one :class:`BatchingHandler`."""
    handler = BatchingHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(FastFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def open_log_file(path: Path) -> BatchingHandler:
    """Also write INFO and above to ``path`` (appended, so it can be tailed like any log)
    until :func:`close_log_file`. Raises ``OSError`` when it cannot be opened."""
    # backslashreplace: a line that cannot be encoded must not fail the batch it is in
    handler = BatchingHandler(open(path, "a", encoding="utf-8", errors="backslashreplace"))  # noqa: SIM115
    handler.setFormatter(FastFormatter())
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


def close_log_file(handler: BatchingHandler) -> None:
    """Write what is left, stop logging to the file and close it."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    handler.stream.close()


def direct_handlers(logger: logging.Logger) -> list[BatchingHandler] | None:
    """The :class:`BatchingHandler` s that receive ``logger``'s INFO records, if that is all
    that happens to them (no filters, no other kind of handler on the way up)."""
    found: list[BatchingHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if not isinstance(handler, BatchingHandler) or handler.filters:
                return None
            if handler.level <= logging.INFO:
                found.append(handler)
        if not current.propagate:
            break
        current = current.parent
    return found or None
