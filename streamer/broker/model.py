"""Plain values that pass between the broker and its users."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """A published event: its id, global sequence number, topic and SSE bytes."""

    id: str
    seq: int
    topic: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Resume:
    """What a new subscriber gets before live events.

    ``replay`` holds the SSE frames it missed, in order. When resuming is not
    possible, ``reset`` names why (``malformed``, ``epoch``, ``unknown`` or
    ``too-old``) and ``head_id`` is the id of the newest event, so a client that
    reconnects after the reset resumes from there.
    """

    replay: list[bytes]
    reset: str | None
    head_id: str
