"""The README's download examples, run as written against a server on the shipped
``media/`` folder: each must succeed (``curl -f`` fails on any error status)."""

from __future__ import annotations

import asyncio
import re
import shlex
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from .conftest import StartServer
from .helpers import MEDIA, ROOT, require_tool

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE_URL = "http://127.0.0.1:8080"


def download_examples() -> list[str]:
    """Every one-line ``curl`` command of the README that reads files or listings."""
    commands = []
    for line in README.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith("curl ") and ("/files/" in command or "/api/files" in command):
            commands.append(command)
    return commands


def test_the_readme_has_download_examples() -> None:
    assert len(download_examples()) >= 5


@pytest.mark.parametrize("command", download_examples())
async def test_each_download_example_works_on_the_shipped_media(
    start_server: StartServer, tmp_path: Path, command: str
) -> None:
    curl = require_tool("curl")
    server = await start_server(media=MEDIA.resolve())
    argv = shlex.split(command.replace(EXAMPLE_URL, server))
    assert argv[0] == "curl"
    assert "-f" in argv or any(re.fullmatch(r"-[A-Za-z]*f[A-Za-z]*", arg) for arg in argv)
    process = await asyncio.create_subprocess_exec(
        curl, "-sS", *argv[1:], cwd=tmp_path, stdout=PIPE, stderr=PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr
