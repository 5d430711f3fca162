"""Fixtures: real servers on free loopback ports, a real client session.

``start_server(**overrides)`` runs the app in this process through
``streamer.server.running`` (the same runner options as the CLI) on port 0;
the helpers the tests share are in ``tests/helpers.py``.

``STREAMER_LOOP=uvloop pytest`` runs the whole suite on uvloop: the tests' own
loop (so the in-process servers) and, through the environment, every server
subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.server import running

from .helpers import make_settings

StartServer = Callable[..., Awaitable[str]]


if os.environ.get("STREAMER_LOOP", "").lower() == "uvloop":  # a hook only when asked for

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> str:
            return await stack.enter_async_context(running(make_settings(**overrides)))

        yield start


@pytest.fixture
async def server(start_server: StartServer) -> str:
    return await start_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    """A logs folder with one empty log, ``app.log``."""
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "app.log").write_bytes(b"")
    return folder.resolve()
