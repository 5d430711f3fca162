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
import signal
import socket
import subprocess
import sys
import time
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


# -- process trees: a supervisor and its workers count as one server -------------------------


def _stats() -> dict[int, list[str]]:
    """The fields after ``(comm)`` of ``/proc/PID/stat``, for every process now."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    return stats


def _family(pid: int, stats: dict[int, list[str]]) -> set[int]:
    family = {pid} if pid in stats else set()
    grown = bool(family)
    while grown:
        children = {child for child, f in stats.items() if int(f[1]) in family}
        grown = not children <= family
        family |= children
    return family


def process_tree(pid: int) -> dict[int, int]:
    """``pid`` and its living descendants: pid -> start time (clock ticks after boot),
    which tells a process from a later one that got the same pid."""
    stats = _stats()
    return {member: int(stats[member][19]) for member in _family(pid, stats)}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and all its descendants, counting the ones that are gone too.

    utime + stime of every living member, plus cutime + cstime: what the children each
    member waited for used. A worker that exits and is restarted during a measurement
    then still counts (its time moves to its parent's cutime when it is reaped).
    """
    stats = _stats()
    ticks = sum(
        int(stats[m][11]) + int(stats[m][12]) + int(stats[m][13]) + int(stats[m][14])
        for m in _family(pid, stats)
    )
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(pid: int) -> int:
    """The RSS of ``pid`` and its living descendants together (pages shared between them,
    such as the interpreter's text, count once per process)."""
    total = 0
    for member in _family(pid, _stats()):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def kill_leftovers(tree: dict[int, int]) -> list[int]:
    """SIGKILL the members of ``tree`` (from :func:`process_tree`) still running: the same
    pid with the same start time. Returns the pids killed."""
    stats = _stats()
    killed = []
    for member, started in tree.items():
        fields = stats.get(member)
        if fields is not None and int(fields[19]) == started and fields[0] != "Z":
            with contextlib.suppress(OSError):
                os.kill(member, signal.SIGKILL)
                killed.append(member)
    return killed


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` (sched_setaffinity on a pid sets only its main thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


# -- a redis-server of the bench's own ------------------------------------------------------

REDIS_SERVER = "/usr/bin/redis-server"


def redis_command(port: int, *args: str, timeout: float = 5.0) -> Any:
    """One command to the Redis on 127.0.0.1:``port`` (redis-py, decoded replies)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, decode_responses=True)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


class RedisServer:
    """``redis-server`` on a free loopback port, with its data (if any) and log in
    ``directory`` (its log there too, unless ``log``); :meth:`stop` and :meth:`start` again
    keep the port and the data dir (with ``appendonly``, the data too). A context manager:
    stopped on exit, always."""

    def __init__(self, directory: Path, appendonly: bool = False, log: Path | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = log or directory / "redis-server.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> float:
        """Start it (on a new free port the first time, the same one after); the monotonic
        time it first answered PING."""
        again = bool(self.port)  # a restart: the same port, or nothing
        for _ in range(1 if again else 3):  # a free port can be taken before redis binds it
            if not again:
                self.port = free_port()
            command = [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"),
                *("--save", "", "--dir", str(self.directory), "--daemonize", "no"),
                *("--appendonly", "yes" if self.appendonly else "no", "--logfile", ""),
            ]
            with self.log.open("ab") as output:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
                )
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(Exception):  # refused, or still loading its data
                    if redis_command(self.port, "PING", timeout=1):
                        return time.monotonic()
                time.sleep(0.01)
            self.stop()
        raise RuntimeError(f"redis-server did not start, see {self.log}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (it writes its append-only file and exits); SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
