"""Following one log file: the tail state machine. Blocking I/O, run in a worker thread.

State: the inode being read, the open file, the offset after the last
complete line, and the partial line waiting for its newline. Each
:meth:`Tail.poll` looks at the name again and returns what happened:

* appended bytes become :class:`TailEvent` lines (``message``), only whole
  lines, ``\\r\\n`` stripped, undecodable bytes replaced; a line longer than
  ``max_line`` is cut there (event ``cut``) and the rest of it skipped;
* a new inode under the name (``mv log log.1 && touch log``): the old file
  is read to its end first, then ``rotated`` and offset 0 of the new one;
* a shorter file, or different bytes just before our offset
  (``copytruncate`` followed by quick writes): ``truncated``, offset 0;
* the name gone: the old file is read to its end, then ``deleted``; when the
  name comes back, ``created`` and its offset 0.

Every line event has the id ``<inode>-<offset after the line>``: resuming
with it continues at exactly that byte while the inode is the same.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Final

from ..paths import open_checked

READ_CHUNK: Final = 1024 * 1024
MAX_READ_PER_POLL: Final = 8 * 1024 * 1024  # a poll returns at most this much; the next continues
FINGERPRINT: Final = 32  # bytes before the read position, compared on each poll (copytruncate)
MAX_LINE: Final = 64 * 1024
MAX_TAIL_SCAN: Final = 64 * 1024 * 1024  # ?tail=N&grep= reads at most this far back
TAIL_BLOCK: Final = 64 * 1024  # reads that look for line boundaries


@dataclass(frozen=True, slots=True)
class TailEvent:
    kind: str  # message, cut, rotated, truncated, deleted, created
    id: str | None
    data: str


def line_id(inode: int, offset: int) -> str:
    return f"{inode}-{offset}"


def parse_line_id(text: str) -> tuple[int, int] | None:
    inode, dash, offset = text.partition("-")
    if not dash or len(text) > 41 or not (inode + offset).isascii():  # two 20-digit numbers
        return None
    if not inode.isdigit() or not offset.isdigit():
        return None
    return int(inode), int(offset)


def _content_length(buffer: bytes, start: int, end: int) -> int:
    """Length of a line without its ``\r`` (a ``\r\n`` line may be ``max_line`` long)."""
    length = end - start
    if length and buffer[end - 1] == 13:  # its \n may still be on the way
        length -= 1
    return length


def decode(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")


class LineSplitter:
    """Whole lines out of appended bytes, with the offset after each."""

    def __init__(self, offset: int, max_line: int = MAX_LINE) -> None:
        self.offset = offset  # after the last complete line (or cut)
        self.max_line = max_line
        self._partial = b""
        self._skipping = False  # inside the rest of a line that was cut

    def reset(self, offset: int) -> None:
        self.offset = offset
        self._partial = b""
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes read past :attr:`offset` (a partial line)."""
        return len(self._partial)

    def feed(self, inode: int, data: bytes) -> list[TailEvent]:
        events: list[TailEvent] = []
        buffer = self._partial + data if self._partial else data
        start = 0
        base = self.offset  # file offset of buffer[0]
        while True:
            newline = buffer.find(b"\n", start)
            end = newline if newline >= 0 else len(buffer)
            if self._skipping:
                if newline < 0:
                    start = len(buffer)
                    break
                self._skipping = False
            elif _content_length(buffer, start, end) > self.max_line:
                cut = start + self.max_line
                events.append(
                    TailEvent("cut", line_id(inode, base + cut), decode(buffer[start:cut]))
                )
                self._skipping = True
                start = cut
                self.offset = base + cut
                continue
            elif newline < 0:
                break
            else:
                events.append(
                    TailEvent(
                        "message", line_id(inode, base + newline + 1), decode(buffer[start:end])
                    )
                )
            start = newline + 1
            self.offset = base + start
        self._partial = buffer[start:] if not self._skipping else b""
        if self._skipping:
            self.offset = base + len(buffer)  # skipped bytes are consumed
        return events

    def flush(self, inode: int) -> list[TailEvent]:
        """The last partial line of a file that will not grow any more (rotated, deleted)."""
        if not self._partial:
            return []
        self.offset += len(self._partial)
        event = TailEvent("message", line_id(inode, self.offset), decode(self._partial))
        self._partial = b""
        return [event]


class Tail:
    """One followed file name (a symlink is followed to whatever it points at now, inside the
    folder). Not thread-safe: one poll at a time (the hub's lock)."""

    def __init__(self, path: str, root: str, max_line: int = MAX_LINE) -> None:
        self.path = path
        self.root = root  # what is opened must be a visible regular file inside it
        self.generation = 0  # bumped on every rotation, truncation or re-creation
        self.real = path  # the file the name leads to now (a symlink's target)
        self.fd: int | None = None
        self.inode = 0
        self.splitter = LineSplitter(0, max_line)
        self._fingerprint = b""
        self._read_pos = 0
        self.exists = False

    @property
    def offset(self) -> int:
        """After the last complete line emitted."""
        return self.splitter.offset

    def start_at_end(self) -> None:
        """Open the file and start after its last complete line (new subscribers see new lines)."""
        fd = self._open()
        if fd is None:
            return
        size = os.fstat(fd).st_size
        end = last_line_end(fd, size)
        self.splitter.reset(end)
        self._read_pos = end
        self._remember(end)

    def poll(self) -> list[TailEvent]:
        events: list[TailEvent] = []
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            st = None  # a folder or a FIFO under the name: as good as gone
        if st is None:
            if self.fd is not None:
                events += self._drain_old()
                events.append(TailEvent("deleted", None, "deleted"))
            return events
        if self.fd is None or st.st_ino != self.inode:
            was_open = self.fd is not None
            reappeared = not was_open and not self.exists
            if was_open:
                events += self._drain_old()
            if self._open() is None:  # vanished again, or now leads outside the folder
                if was_open:
                    events.append(TailEvent("deleted", None, "deleted"))
                return events
            self._restart()
            kind = "created" if reappeared else "rotated"
            events.append(TailEvent(kind, line_id(self.inode, 0), kind))
        elif self._was_truncated():
            self._restart()
            events.append(TailEvent("truncated", line_id(self.inode, 0), "truncated"))
        events += self._read_new()
        return events

    def has_more(self) -> bool:
        """Unread bytes left after a poll that stopped at :data:`MAX_READ_PER_POLL`."""
        if self.fd is None:
            return False
        try:
            return os.fstat(self.fd).st_size > self._read_pos
        except OSError:
            return False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- internals ------------------------------------------------------------------

    def _restart(self) -> None:
        self.splitter.reset(0)
        self._read_pos = 0
        self._fingerprint = b""
        self.generation += 1

    def _open(self) -> int | None:
        opened = open_log(self.root, self.path)
        if opened is None:
            self.exists = False
            return None
        fd, self.real = opened
        self.close()
        self.fd = fd
        self.inode = os.fstat(fd).st_ino
        self.exists = True
        return fd

    def _drain_old(self) -> list[TailEvent]:
        """The rest of the file we had open (rotated or deleted), then close it."""
        events = self._read_new(limit=None)
        events += self.splitter.flush(self.inode)
        self.close()
        self.exists = False
        return events

    def _was_truncated(self) -> bool:
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if size < self._read_pos:
            return True
        fingerprint = self._fingerprint
        if not fingerprint:
            return False
        at = self._read_pos - len(fingerprint)
        return os.pread(self.fd, len(fingerprint), at) != fingerprint

    def fingerprint(self) -> tuple[int, bytes]:
        """``(offset, bytes)``: the last bytes read, as they were when they were read."""
        return self._read_pos - len(self._fingerprint), self._fingerprint

    def _remember(self, offset: int) -> None:
        assert self.fd is not None
        start = max(0, offset - FINGERPRINT)
        self._fingerprint = os.pread(self.fd, offset - start, start)

    def _read_new(self, limit: int | None = MAX_READ_PER_POLL) -> list[TailEvent]:
        if self.fd is None:
            return []
        events: list[TailEvent] = []
        read = 0
        while limit is None or read < limit:
            data = os.pread(self.fd, READ_CHUNK, self._read_pos)
            if not data:
                break
            self._read_pos += len(data)
            read += len(data)
            events += self.splitter.feed(self.inode, data)
        if read:
            self._remember(self._read_pos)  # includes a held partial line
        return events


def open_log(root: str, path: str) -> tuple[int, str] | None:
    """``(fd, real path)`` of ``path`` if it is a regular file whose real path is visible
    inside ``root`` (the name may have been swapped for a symlink leading elsewhere)."""
    opened = open_checked(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if opened is not None and not stat.S_ISREG(os.fstat(opened[0]).st_mode):
        os.close(opened[0])
        return None
    return opened


def line_start_at_or_after(fd: int, offset: int) -> int:
    """``offset`` if a line starts there, else the start of the next line (resuming from the
    id of a ``cut`` event skips the rest of that line, as live subscribers did)."""
    if offset == 0 or os.pread(fd, 1, offset - 1) == b"\n":
        return offset
    position = offset
    while block := os.pread(fd, TAIL_BLOCK, position):
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return position


def last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size``: 0 if the file has none, ``size``
    if there is none in the last :data:`MAX_TAIL_SCAN` bytes (a huge unfinished line)."""
    position = size
    while position > 0:
        if size - position >= MAX_TAIL_SCAN:
            return size
        start = max(0, position - TAIL_BLOCK)
        block = os.pread(fd, position - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


class SpanReader:
    """Lines of one file from ``start`` to ``stop``, a chunk per call, with the same rules as
    the live tail (one splitter throughout, so a cut line's rest is skipped across chunks).
    For catching up a resumed subscriber; blocking."""

    def __init__(
        self,
        fd: int,
        inode: int,
        start: int,
        stop: int,
        max_line: int,
        fingerprint: tuple[int, bytes] = (0, b""),
    ) -> None:
        self.fd = fd
        self.inode = inode
        self.stop = stop
        self.position = start
        self.splitter = LineSplitter(start, max_line)
        self.fingerprint = fingerprint  # (offset, bytes) the tail saw: still there?

    def next_chunk(self) -> list[TailEvent] | None:
        """The next lines, or ``None`` at ``stop``, at the end of the file, or once the file
        no longer holds what the tail read (truncated and rewritten: these offsets hold
        other bytes now; the live stream has the ``truncated`` event)."""
        if self.position >= self.stop or not self._unchanged():
            return None
        data = os.pread(self.fd, min(READ_CHUNK, self.stop - self.position), self.position)
        if not data or not self._unchanged():  # checked again: the read may have raced it
            return None
        self.position += len(data)
        return self.splitter.feed(self.inode, data)

    def _unchanged(self) -> bool:
        at, expected = self.fingerprint
        return not expected or os.pread(self.fd, len(expected), at) == expected


class BackwardLines:
    """The complete lines before ``stop``, newest first, one block per call (blocking).

    For ``?tail=N``: the caller pulls blocks until it has what it wants, each call a short
    step it can run in a worker thread. Bytes after the last newline before ``stop`` (a
    partial line, or the rest of a cut one) are not a line yet. Lines longer than
    ``max_line`` come out cut, as live. At most ``scan`` bytes before ``stop`` are read; a
    line that starts before that is left out. Memory: one block plus ``max_line`` bytes of a
    line that spans blocks, however long it is.
    """

    def __init__(
        self, fd: int, inode: int, stop: int, max_line: int = MAX_LINE, scan: int = MAX_TAIL_SCAN
    ) -> None:
        self.fd = fd
        self.inode = inode
        self.max_line = max_line
        self.low = stop  # bytes from here to ``stop`` have been read
        self.limit = max(0, stop - scan)  # never read before this
        self.block = TAIL_BLOCK  # doubles up to READ_CHUNK: a small tail reads little
        self._skip_partial = True  # still before the last newline before ``stop``
        self._head = b""  # the first bytes of the line that ends at ``low + _length``
        self._length = 0  # the whole length of that line, its newline included

    def next_block(self) -> list[TailEvent] | None:
        """The lines that end in the next block back, newest first; ``None`` when done."""
        if self.low <= self.limit:
            return None
        start = max(self.limit, self.low - self.block)
        self.block = min(self.block * 2, READ_CHUNK)
        data = os.pread(self.fd, self.low - start, start)
        if len(data) < self.low - start:  # truncated under us: these offsets mean nothing now
            self.low = self.limit
            return None
        self.low = start
        if self._skip_partial:
            last = data.rfind(b"\n")
            if last < 0:
                return []
            data = data[: last + 1]
            self._skip_partial = False
        return self._lines(start, data)

    def _lines(self, start: int, data: bytes) -> list[TailEvent]:
        events: list[TailEvent] = []
        first = data.find(b"\n")
        if first < 0:  # all of it belongs to the line that spans blocks
            self._join(data)
        else:
            last = data.rfind(b"\n")
            if self._length:  # the line that spans blocks starts after ``last``
                events.append(self._spanning(start + last + 1, data[last + 1 :]))
            whole = data[first + 1 : last + 1].split(b"\n")[:-1]
            position = start + last + 1
            for line in reversed(whole):
                position -= len(line) + 1
                events.append(_whole_line(self.inode, line, position, self.max_line))
            self._head, self._length = b"", 0
            self._join(data[: first + 1])
        if start == 0 and self._length:  # the file's first line
            events.append(self._spanning(0, b""))
        return events

    def _join(self, before: bytes) -> None:
        """``before`` precedes the spanning line's bytes: keep its head, count its length."""
        self._head = (before + self._head)[: self.max_line + 2]
        self._length += len(before)

    def _spanning(self, line_start: int, before: bytes) -> TailEvent:
        """The line that starts at ``line_start`` with ``before`` and ends in ``_head``."""
        self._join(before)
        length, head = self._length - 1, self._head  # without its newline
        self._head, self._length = b"", 0
        if length <= self.max_line + 1:  # all of it is in the head
            return _whole_line(self.inode, head[:length], line_start, self.max_line)
        return TailEvent(
            "cut", line_id(self.inode, line_start + self.max_line), decode(head[: self.max_line])
        )


def last_lines(
    fd: int,
    inode: int,
    stop: int,
    count: int,
    max_line: int = MAX_LINE,
    needle: str | None = None,
) -> list[TailEvent]:
    """The last ``count`` complete lines before ``stop`` (that contain ``needle``, if given),
    read backwards in blocks, never more than :data:`MAX_TAIL_SCAN` bytes."""
    found: list[TailEvent] = []
    reader = BackwardLines(fd, inode, stop, max_line)
    while len(found) < count and (events := reader.next_block()) is not None:
        found += [e for e in events if needle is None or needle in e.data.casefold()]
    del found[count:]
    found.reverse()
    return found


def _whole_line(inode: int, line: bytes, start: int, max_line: int) -> TailEvent:
    if len(line) - line.endswith(b"\r") > max_line:
        return TailEvent("cut", line_id(inode, start + max_line), decode(line[:max_line]))
    return TailEvent("message", line_id(inode, start + len(line) + 1), decode(line))
