"""The media type of a file, from its name (shared by downloads and listings)."""

from __future__ import annotations

import functools
import mimetypes
import os


def content_type(name: str) -> str:
    """The media type for a file name (UTF-8 assumed for text)."""
    return _content_type_for(os.path.splitext(name)[1].lower())


@functools.lru_cache(maxsize=1024)
def _content_type_for(extension: str) -> str:
    guessed, _ = mimetypes.guess_type("x" + extension, strict=False)
    if guessed is None:
        return "application/octet-stream"
    return guessed + "; charset=utf-8" if guessed.startswith("text/") else guessed
