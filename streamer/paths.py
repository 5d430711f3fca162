"""Safe resolution of user-supplied paths inside a root folder. Pure apart from ``lstat``.

Everything that is not a plain, visible path inside the root resolves to
``None``, and callers answer every ``None`` with the same 404, so a response
reveals nothing about what exists outside the root or why a path was refused.
"""

from __future__ import annotations

import os
import re
from typing import Final

MAX_PATH: Final = 1024  # characters of the whole relative path
MAX_NAME: Final = 255  # bytes of one component, as on most file systems
_DRIVE: Final = re.compile(r"[A-Za-z]:")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1
# Percent-encodings that would smuggle a separator or NUL past the router's decoding.
_SMUGGLED: Final = ("%2f", "%5c", "%00")


def has_smuggled_separator(raw_path: str) -> bool:
    """Does the raw request path (as sent, before decoding) encode ``/``, ``\\`` or NUL?
    The router decodes them into the path, where they would look like real separators."""
    path = raw_path.partition("?")[0].lower()
    return any(token in path for token in _SMUGGLED)


def clean_parts(user_path: str) -> list[str] | None:
    """The components of a relative path, or ``None`` when it is not acceptable.

    Refused: absolute paths, Windows drive letters, backslashes, NUL and other
    control characters, empty components (``a//b``), components starting with
    a dot (``.``, ``..``, dotfiles), overlong paths and names. ``""`` is the
    root itself (``[]``).
    """
    if user_path == "":
        return []
    if len(user_path) > MAX_PATH or user_path.startswith("/") or "\\" in user_path:
        return None
    if _CONTROL.search(user_path):  # NUL, newlines, other controls
        return None
    parts = user_path.split("/")
    if _DRIVE.match(parts[0]):
        return None
    for part in parts:
        if not part or part.startswith("."):
            return None
        try:
            encoded = os.fsencode(part)
        except UnicodeError:  # a lone surrogate that no file name can hold
            return None
        if len(encoded) > MAX_NAME:
            return None
    return parts


def representable(name: str) -> bool:
    """Can a URL name this name from ``os.listdir``, and JSON hold it? Not when the bytes on
    disk are not UTF-8: Python hands them over as lone surrogates (``b"\\xff"`` is
    ``"\\udcff"``), which UTF-8 cannot encode, and the router decodes ``%FF`` to U+FFFD."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def resolve_inside(root: str, user_path: str) -> str | None:
    """The real path of ``user_path`` under ``root`` (itself a real path), or ``None``.

    Symlinks are followed, but their target must stay inside the root and must
    not be hidden (a link to a dotfile is refused like the dotfile).
    """
    parts = clean_parts(user_path)
    if parts is None:
        return None
    candidate = os.path.join(root, *parts)
    real = os.path.realpath(candidate)
    return real if real == candidate or is_visible_inside(root, real) else None


def is_visible_inside(root: str, real: str) -> bool:
    """Is the real path ``real`` the root or below it, with no hidden component?"""
    if real == root:
        return True
    if not real.startswith(root + os.sep):
        return False
    return not any(part.startswith(".") for part in real[len(root) + 1 :].split(os.sep))


def open_inside(root: str, user_path: str, flags: int) -> tuple[int, str] | None:
    """Open ``user_path`` under ``root``: ``(fd, real path)``, or ``None`` like
    :func:`resolve_inside`."""
    parts = clean_parts(user_path)
    if parts is None:
        return None
    return open_checked(root, os.path.join(root, *parts), flags)


def open_checked(root: str, path: str, flags: int) -> tuple[int, str] | None:
    """Open ``path`` and keep it only if what was opened is visible inside ``root``:
    ``(fd, real path)``, else ``None`` (closed again).

    The one containment check on opened files. It looks at what was actually
    opened (its path read back from ``/proc/self/fd``: one system call instead
    of an ``lstat`` per component, and no window for a symlink to be swapped
    between check and open).
    """
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve by name
        real = os.path.realpath(path)
    if is_visible_inside(root, real):
        return fd, real
    os.close(fd)
    return None
