"""A real ``redis-server`` for the tests: on a free loopback port, in a folder of its own.

Started, stopped, killed and restarted by the tests themselves (with or without its
append-only file), so outages and restarts are real ones. The Redis broker's tests and
the workers' tests share it through the fixtures in ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from .helpers import free_port, require_tool

START_TIMEOUT = 10.0


class RedisServer:
    """One ``redis-server`` process; :attr:`url` stays the same across restarts."""

    def __init__(self, folder: Path, appendonly: bool = False) -> None:
        self.binary = require_tool("redis-server")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",  # a stop loses nothing: the tests count every event
            "--logfile", str(self.folder / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Whether it answers PING (also false while it loads its data)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """A clean stop (SIGTERM: with AOF, everything written is kept)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def wipe(self) -> None:
        """Forget all data: the next start is an empty Redis."""
        for path in self.folder.iterdir():
            if path.name != "redis.log":
                if path.is_dir():
                    for inner in path.iterdir():
                        inner.unlink()
                    path.rmdir()
                else:
                    path.unlink()
