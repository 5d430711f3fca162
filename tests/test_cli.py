"""The command line: settings from flags and env, clear exits, graceful shutdown."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest

from streamer.errors import StartupError
from streamer.server import running
from streamer.settings import Settings, load_settings

from .helpers import (
    MEDIA,
    ROOT,
    cli_server,
    host_port,
    make_settings,
    publish,
    require,
    subscribers_are,
    wait_for,
)
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
        (["--media", "README.md"], {}, "--media='README.md': not a folder"),
        (["--logs", "/no/such/folder"], {}, "--logs='/no/such/folder': folder not found"),
        (["--token", ""], {}, "--token='': must not be empty"),
        ([], {"STREAMER_TOKEN": "two words"}, "STREAMER_TOKEN='two words': must be printable"),
        (["--log-file", "/no/such/folder/x.log"], {}, "cannot write the server's own log"),
        (["--port", "70000"], {}, "--port='70000': must be between 0 and 65535"),
        (["--port", "eighty"], {}, "--port='eighty': not a number"),
        (["--heartbeat", "0"], {}, "--heartbeat='0': must be a positive number"),
        (["--history", "-1"], {}, "--history='-1': must be at least 1"),
        (["--workers", "2"], {}, "--workers=2 needs a shared broker (--broker redis://"),
        (["--broker", "redis://:6379"], {}, "a Redis URL needs a host"),
        (["--broker", "redis://h:port"], {}, "not a valid Redis URL"),
        (["--broker", "unix://"], {}, "needs a socket path"),
        (["--redis-prefix", "a b"], {}, "--redis-prefix='a b': must be 1 to 64"),
        (["--broker", "kafka"], {}, "--broker='kafka': must be 'memory' or a Redis URL"),
        ([], {"STREAMER_PORT": "x"}, "STREAMER_PORT='x': not a number"),
        ([], {"STREAMER_LOG_LEVEL": "loud"}, "STREAMER_LOG_LEVEL='loud': must be debug"),
        (["--loop", "trio"], {}, "--loop='trio': must be auto, asyncio or uvloop"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamer: error: ")
    assert message in lines[0]


def test_an_own_log_that_cannot_be_written_names_the_cause(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "streamer.log").mkdir(parents=True)  # a folder where the own log would go
    result = run_cli("serve", "--logs", str(logs))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"streamer: error: cannot write the server's own log {logs / 'streamer.log'}: "
        "Is a directory; choose another with --log-file FILE, or --log-file off"
    ]


def test_the_own_log_can_go_elsewhere_or_nowhere(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    elsewhere = tmp_path / "own.log"
    settings = load_settings({"logs": str(logs), "log_file": str(elsewhere)}, {})
    assert settings.log_file == elsewhere
    assert load_settings({"logs": str(logs)}, {}).log_file == logs.resolve() / "streamer.log"
    assert load_settings({"logs": str(logs), "log_file": "off"}, {}).log_file is None
    assert load_settings({}, {}).log_file is None  # no logs folder: stderr only


async def test_a_failed_start_stops_what_had_started(tmp_path: Path) -> None:
    """The own log starts first; a port already taken fails later: the log is closed again
    and the error is a StartupError that names the address."""
    before = list(logging.getLogger().handlers)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(port=port, log_file=tmp_path / "own.log")
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}: "):
            async with running(settings):
                pass
    assert logging.getLogger().handlers == before


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


def test_help_lists_every_setting_with_its_env_var_and_default() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name in fields(Settings):
        flag = "--" + name.name.replace("_", "-")
        assert flag in text
        assert f"[STREAMER_{name.name.upper()}]" in text
    assert "--heartbeat SECONDS" in text
    assert "--max-buffer BYTES" in text
    assert "(default: 15)" in text
    assert "(default: 1048576)" in text
    assert "VALUE" not in text


def test_top_level_help_points_to_the_serve_flags() -> None:
    for args in (["--help"], ["-h"]):
        result = run_cli(*args)
        assert result.returncode == 0
        assert "serve --help" in result.stdout


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_the_server_runs_on_the_loop_asked_for(
    http: aiohttp.ClientSession, loop: str
) -> None:
    require(importlib.util.find_spec(loop) is not None, f"{loop} is not installed")
    with cli_server("--loop", loop) as server:
        async with subscribe(http, server.url) as stream:
            assert stream.text.startswith("retry: ")
        assert server.lines[0].endswith(f"(media {MEDIA}, {loop} loop)\n")


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


async def test_shutdown_ends_in_time_however_many_streams_are_open(
    http: aiohttp.ClientSession,
) -> None:
    """Ending a stream costs ~110 µs (a send and a close): 4,000 of them take longer than
    a 0.1 s --shutdown-timeout, so past it the process exits (the kernel closes the rest,
    the clients reconnect), within the timeout + 0.2 s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 4000
    require(hard >= count + 500, f"an open-file limit of {count + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 500), hard))
    sockets: list[socket.socket] = []
    try:
        with cli_server("--shutdown-timeout", "0.1") as server:
            host, port = host_port(server.url)
            for n in range(count):
                sock = socket.create_connection((host, port))
                sock.sendall(f"GET /events?topic=t{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sockets.append(sock)
            await wait_for(
                lambda: subscribers_are(http, server.url, count), timeout=30, interval=0.1
            )
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            exit_code = await asyncio.to_thread(server.process.wait, 10)
            took = time.monotonic() - started
        assert exit_code == 0
        assert took < 0.1 + 0.2 + 0.1, took  # the last 0.1: starting the clock, waking up
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_server_runs_and_exits_while_nobody_reads_its_output(
    http: aiohttp.ClientSession,
) -> None:
    """Its stderr a pipe that fills up (a log shipper that hung): requests are answered
    and the process still exits on SIGTERM (it used to freeze on the first full write)."""
    with cli_server("--shutdown-timeout", "0.2", collect=False) as server:
        # from here on nobody reads: ~1,500 access lines are far more than a pipe holds
        for _ in range(1500):
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 200
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait, 10) == 0
