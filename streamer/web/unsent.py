"""The server-wide budget for bytes written to streams but not yet read by their clients.

Each stream may lag by ``--max-buffer`` bytes; thousands of streams lagging
at once could still hold gigabytes (5,000 stalled subscribers of 100 KB
events: 4.97 GB before this budget). ``--max-unsent`` bounds the sum: when it
is passed, the streams lagging most are cut first until the total is back
under it (each resumes by id, like any reconnect).

Only lagging streams are tracked. A stream whose client keeps up has an
empty transport buffer after each write and costs nothing here; a lagging
one is *charged* what its transport holds plus what its kernel send buffer
holds (full, or the transport would not be buffering: that is why streams
cap ``SO_SNDBUF``, see :data:`STREAM_SNDBUF`). Charges are refreshed on each
write to the stream and, before anyone is cut, for all of them: a buffer
that drained since its last write is not held against it.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

log = logging.getLogger("streamer.streams")

# The kernel send buffer asked for each stream socket (Linux doubles it). Left alone, TCP
# autotuning grows it to 4 MB on loopback, memory outside any account (the probe saw
# ~0.75 MB per stalled client); 64 KiB still holds many coalesced writes for a reader
# that keeps up.
STREAM_SNDBUF: Final = 64 * 1024
LOW_WATER: Final = 0.75  # an exhausted budget is cut back to this share of it


class Laggard(Protocol):
    """A stream as the budget sees it."""

    charged: int  # what the budget holds against it now

    def unsent(self) -> int:
        """Bytes not yet read by the client, kernel buffer included (0 when none)."""
        ...

    def cut(self, reason: str) -> None:
        """End the stream at once (it must :meth:`UnsentBudget.release` itself)."""
        ...


class UnsentBudget:
    """Unsent bytes over every stream of the server, bounded by ``limit``."""

    __slots__ = ("_enforcing", "_laggards", "cuts", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.cuts = 0  # streams cut because the budget was exhausted (for /metrics)
        self._laggards: dict[Laggard, None] = {}
        self._enforcing = False

    def __len__(self) -> int:
        return len(self._laggards)

    def charge(self, stream: Laggard, unsent: int) -> None:
        """Record that ``stream`` now holds ``unsent`` bytes (0: it caught up)."""
        self.total += unsent - stream.charged
        stream.charged = unsent
        if unsent:
            self._laggards[stream] = None
            if self.total > self.limit:
                self.enforce()  # now, mid-pass: one fan-out pass can be bigger than the budget
        else:
            self._laggards.pop(stream, None)

    def release(self, stream: Laggard) -> None:
        """``stream`` ended: it holds nothing any more."""
        if stream.charged:
            self.charge(stream, 0)

    def enforce(self) -> None:
        """Refresh every charge; then, if still over the limit, cut the largest laggards
        until the total is down to :data:`LOW_WATER` of it. (Down to the limit only, the
        next write would be over again: a pass writing 100 KB to 5,000 laggards would
        then refresh and sort them all once per write.)"""
        if self._enforcing:  # a cut stream's last words can land here
            return
        self._enforcing = True
        try:
            for stream in list(self._laggards):
                self._recharge(stream, stream.unsent())
            if self.total > self.limit:
                self._cut_largest()
        finally:
            self._enforcing = False

    def _recharge(self, stream: Laggard, unsent: int) -> None:
        self.total += unsent - stream.charged
        stream.charged = unsent
        if not unsent:
            self._laggards.pop(stream, None)

    def _cut_largest(self) -> None:
        over = self.total
        target = int(self.limit * LOW_WATER)
        cut = 0
        for stream in sorted(self._laggards, key=_charged, reverse=True):
            if self.total <= target:
                break
            stream.cut("slow")
            self.release(stream)  # in case it did not
            cut += 1
        self.cuts += cut
        log.warning(
            "unsent bytes %d over the budget of %d: cut the %d streams lagging most",
            over,
            self.limit,
            cut,
        )


def _charged(stream: Laggard) -> int:
    return stream.charged
