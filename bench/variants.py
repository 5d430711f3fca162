"""What the benchmarks share to run the current code beside an older tree (``--before``),
and to count what a server costs.

``python -m streamer`` run with another working directory imports that
directory's ``streamer`` package (``-m`` puts the working directory first on
``sys.path``), so one virtualenv serves both trees in one run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# The current code on a given event loop (its default is asyncio).
LOOP_VARIANTS: dict[str, list[str]] = {
    "streamer-asyncio": ["--loop", "asyncio"],
    "streamer-uvloop": ["--loop", "uvloop"],
}

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def clean_env() -> dict[str, str]:
    """This environment without STREAMER_* variables: only the flags configure a server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}


def before_tree(directory: str) -> Path:
    """``--before DIR``, checked: ``python -m streamer`` run there imports DIR/streamer."""
    tree = Path(directory).resolve()
    if not (tree / "streamer").is_dir():
        sys.exit(f"--before {directory}: no streamer/ package there")
    done = subprocess.run(
        [PYTHON, "-c", "import streamer; print(streamer.__file__)"],
        capture_output=True,
        text=True,
        cwd=tree,
        env=clean_env(),
    )
    imported = Path(done.stdout.strip() or "?").resolve()
    if done.returncode != 0 or not imported.is_relative_to(tree):
        sys.exit(f"--before {directory}: python -m streamer there imports {imported}, not {tree}")
    return tree


def old_command(command: list[str], tree: Path) -> tuple[list[str], list[str]]:
    """``command`` without the flags (and their values) that ``streamer serve`` in ``tree``
    does not have, and the flags left out."""
    done = subprocess.run(
        [*command[: command.index("serve") + 1], "--help"],
        capture_output=True,
        text=True,
        cwd=tree,
        env=clean_env(),
        check=True,
    )
    known = set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))
    kept: list[str] = []
    dropped: list[str] = []
    tokens = iter(command)
    for token in tokens:
        flag = token.split("=", 1)[0]
        if token.startswith("--") and flag not in known:
            dropped.append(flag)
            if "=" not in token:
                next(tokens, None)  # every serve flag takes a value
            continue
        kept.append(token)
    return kept, dropped


def git_commit(tree: Path) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], capture_output=True, text=True, cwd=tree)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its living descendants (nginx's worker)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    family = {pid}
    grown = True
    while grown:
        children = {child for child, parent in parents.items() if parent in family}
        grown = not children <= family
        family |= children
    return sum(ticks.get(member, 0) for member in family) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for servers that need one given)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
