"""Plain values that pass between a broker and its users."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ..fanout import Frame

_POSITION = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")


class Position(NamedTuple):
    """Where an event sits in a broker's log: the log's ``epoch`` (a new one whenever the
    log starts over empty) and the event's ``offset`` in it. Clients see it as the opaque
    id ``<epoch>-<offset>``; it is parsed once, at the edge, and compared as a value.
    (Named tuples here and in :class:`Event`: one of each is made per publish.)"""

    epoch: int
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """The position an id names, or ``None`` when it is not one of ours."""
        match = _POSITION.fullmatch(text)
        return None if match is None else cls(int(match[1]), int(match[2]))


class Event(NamedTuple):
    """A published event: its position and the frame every subscriber gets."""

    position: Position
    frame: Frame

    @property
    def id(self) -> str:
        return str(self.position)


@dataclass(frozen=True, slots=True)
class Resume:
    """What a new subscriber gets before live events.

    ``replay`` holds the SSE frames it missed, in order. When resuming is not
    possible, ``reset`` names why (``malformed``, ``epoch``, ``unknown`` or
    ``too-old``) and ``head`` is the position of the newest event, so a client
    that reconnects after the reset resumes from there.
    """

    replay: list[bytes]
    reset: str | None
    head: Position

    @property
    def head_id(self) -> str:
        return str(self.head)


@dataclass(frozen=True, slots=True)
class Health:
    """A broker's own view of itself, for ``/healthz`` and ``/metrics``."""

    kind: str  # "memory", "redis"
    state: str  # "ok", or what is wrong ("closed", "unavailable", ...)
    detail: str = ""  # why, for people: "Connection refused", ...
    counters: Mapping[str, int] = field(default_factory=dict)  # for /metrics, e.g. reconnects

    @property
    def ok(self) -> bool:
        return self.state == "ok"
