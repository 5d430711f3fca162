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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.server import running

from .helpers import make_settings
from .redis_support import RedisServer

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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, with an append-only file: to stop and restart."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """Key prefix unique to the test, so tests on the shared Redis never meet."""
    return f"t{uuid.uuid4().hex[:10]}"
