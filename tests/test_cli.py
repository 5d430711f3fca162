"""The command line: settings from flags and env, clear exits, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from streamer.settings import Settings, load_settings

from .helpers import MEDIA, ROOT, cli_server, publish
from .sse_client import subscribe


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--media", "/no/such/folder"], {}, "--media='/no/such/folder': folder not found"),
        (["--port", "70000"], {}, "--port='70000': must be between 0 and 65535"),
        (["--port", "eighty"], {}, "--port='eighty': not a number"),
        (["--heartbeat", "0"], {}, "--heartbeat='0': must be a positive number"),
        (["--history", "-1"], {}, "--history='-1': must be at least 1"),
        (["--workers", "2"], {}, "--workers > 1 needs a shared broker"),
        (["--broker", "redis://127.0.0.1:1"], {}, "the redis broker is not available"),
        (["--broker", "kafka"], {}, "--broker='kafka': must be 'memory'"),
        ([], {"STREAMER_PORT": "x"}, "STREAMER_PORT='x': not a number"),
        ([], {"STREAMER_LOG_LEVEL": "loud"}, "STREAMER_LOG_LEVEL='loud': must be debug"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args: list[str], env: dict, message: str) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamer: error: ")
    assert message in lines[0]


def test_port_in_use_exits_2_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "--media", str(MEDIA))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"streamer: error: cannot listen on 127.0.0.1:{port}: ")


def test_flag_wins_over_env_and_env_over_default() -> None:
    environ = {"STREAMER_HEARTBEAT": "3", "STREAMER_HISTORY": "7", "STREAMER_TOKEN": "tok"}
    settings = load_settings({"heartbeat": "5", "media": str(MEDIA)}, environ)
    assert settings.heartbeat == 5.0
    assert settings.history == 7
    assert settings.token == "tok"
    assert settings.retry == Settings().retry
    assert settings.media == MEDIA.resolve()


def test_help_lists_every_setting_with_its_env_var() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag, env in [
        ("--heartbeat", "STREAMER_HEARTBEAT"),
        ("--max-buffer", "STREAMER_MAX_BUFFER"),
    ]:
        assert flag in result.stdout
        assert env in result.stdout


async def test_env_reaches_the_running_server(http: aiohttp.ClientSession) -> None:
    with cli_server(env={"STREAMER_RETRY": "1234"}) as server:
        async with subscribe(http, server.url) as stream:
            assert stream.text == "retry: 1234\n: connected\n\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_flushes_and_ends_streams_fast(
    http: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    with cli_server() as server:
        async with subscribe(http, server.url, "bye") as one, subscribe(http, server.url) as two:
            event_id = await publish(http, server.url, "bye", "last words")
            server.process.send_signal(sig)
            started = time.monotonic()
            await one.wait_end(timeout=3)
            await two.wait_end(timeout=3)
            ended_after = time.monotonic() - started
            assert [e.id for e in one.events] == [event_id]
            assert [e.id for e in two.events] == [event_id]
        assert ended_after < 1.5
        exit_code = await asyncio.to_thread(server.process.wait, 5)
        assert exit_code == 0
        assert time.monotonic() - started < 2.5
