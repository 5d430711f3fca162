"""How values look in the JSON answers that several endpoints share."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def iso_time(seconds: float) -> str:
    """``2026-11-25T20:13:32Z``: UTC, whole seconds."""
    return datetime.fromtimestamp(int(seconds), UTC).isoformat().replace("+00:00", "Z")


def json_line(value: Any) -> str:
    """A JSON answer's body: one line, ending in a newline like any text a terminal shows."""
    return json.dumps(value) + "\n"
