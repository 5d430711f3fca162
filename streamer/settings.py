"""All configuration in one frozen dataclass, built from CLI flags and ``STREAMER_*`` env.

Every setting has one name (``heartbeat``), one flag (``--heartbeat``) and one
environment variable (``STREAMER_HEARTBEAT``). A flag given on the command
line wins over the environment, which wins over the default. Values arrive as
strings and are checked here, so a bad one fails at start with one clear line.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from .errors import SettingsError

ENV_PREFIX = "STREAMER_"
KIB = 1024


def _help(text: str, metavar: str) -> dict[str, str]:
    return {"help": text, "metavar": metavar}


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration of one server process."""

    host: str = field(default="127.0.0.1", metadata=_help("address to listen on", "ADDRESS"))
    port: int = field(default=8080, metadata=_help("TCP port (0 picks a free one)", "PORT"))
    media: Path = field(default=Path("media"), metadata=_help("folder served under /files/", "DIR"))
    logs: Path | None = field(default=None, metadata=_help("folder of log files to tail", "DIR"))
    log_file: Path | None = field(
        default=None,
        metadata=_help(
            "the server's own log (default: streamer.log in --logs, if given; 'off': none)",
            "FILE",
        ),
    )
    broker: str = field(
        default="memory",
        metadata=_help(
            "event broker: memory, or a Redis URL (redis://host:6379/0, rediss://, unix://)",
            "BROKER",
        ),
    )
    redis_prefix: str = field(
        default="streamer", metadata=_help("prefix of the broker's Redis keys", "PREFIX")
    )
    workers: int = field(
        default=1, metadata=_help("worker processes on one port (needs the Redis broker)", "N")
    )
    token: str | None = field(
        default=None, metadata=_help("bearer token required to publish", "TOKEN")
    )
    heartbeat: float = field(default=15.0, metadata=_help("seconds between idle pings", "SECONDS"))
    history: int = field(default=10_000, metadata=_help("events kept for resume", "N"))
    history_bytes: int = field(
        default=64 * KIB * KIB, metadata=_help("bytes of events kept for resume", "BYTES")
    )
    retry: int = field(default=2000, metadata=_help("client reconnect delay (ms)", "MS"))
    max_body: int = field(default=64 * KIB, metadata=_help("largest publish body", "BYTES"))
    max_line: int = field(default=64 * KIB, metadata=_help("longest log line sent whole", "BYTES"))
    max_buffer: int = field(
        default=1024 * KIB, metadata=_help("unsent bytes before a slow subscriber is cut", "BYTES")
    )
    max_unsent: int = field(
        default_factory=lambda: default_max_unsent(),
        metadata=_help(
            "unsent bytes over all subscribers before the largest laggards are cut "
            "(by default 1/16 of memory, within 64 MiB and 1 GiB)",
            "BYTES",
        ),
    )
    send_timeout: float = field(
        default=30.0,
        metadata=_help("seconds a client may leave a response unread before it is cut", "SECONDS"),
    )
    header_timeout: float = field(
        default=5.0,
        metadata=_help("seconds a client has to send a whole request head", "SECONDS"),
    )
    idle_timeout: float = field(
        default=30.0, metadata=_help("seconds an idle keep-alive connection stays open", "SECONDS")
    )
    max_connections: int | None = field(
        default=None,
        metadata=_help(
            "most client connections at once (default: what the open-file limit allows, "
            "less a reserve for files and logs)",
            "N",
        ),
    )
    own_log_access: str = field(
        default="loopback",
        metadata=_help(
            "who may tail the server's own log (it shows every client and URL): loopback or anyone",
            "WHO",
        ),
    )
    shutdown_timeout: float = field(
        default=1.0, metadata=_help("seconds streams get to flush at shutdown", "SECONDS")
    )
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error", "LEVEL"))
    loop: str = field(
        default="asyncio",
        metadata=_help(
            "event loop: asyncio, uvloop (pip install 'streamer[uvloop]'), "
            "or auto (uvloop when installed)",
            "LOOP",
        ),
    )


def default_max_unsent() -> int:
    """1/16 of the machine's memory, within 64 MiB and 1 GiB: room for thousands of lagging
    subscribers at the default --max-buffer, and never most of a small machine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = 1 << 30
    return min(max(memory // 16, 64 * KIB * KIB), 1024 * KIB * KIB)


OWN_LOG_NAME: Final = "streamer.log"  # the own log's name in --logs when --log-file is not given


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class SettingHelp:
    """What ``--help`` shows of one setting."""

    text: str
    metavar: str
    default: str | None  # as a user would type it; None: no default


def setting_help() -> dict[str, SettingHelp]:
    """Help for every setting, keyed by name (the CLI builds its flags from this)."""
    return {
        f.name: SettingHelp(f.metadata["help"], f.metadata["metavar"], _shown(_default(f)))
        for f in fields(Settings)
    }


def _default(f: Field[Any]) -> object:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _shown(default: object) -> str | None:
    if default is None:
        return None
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError("not a folder")
    if not path.is_dir():
        raise ValueError("folder not found")
    return path.resolve()


def _log_file(text: str) -> Path | None:
    if text.lower() in ("off", "none", "-"):
        return None
    if not text.strip():
        raise ValueError("must be a file name, or 'off'")
    return Path(text).expanduser().absolute()


def _own_log_access(text: str) -> str:
    who = text.lower()
    if who not in ("loopback", "anyone"):
        raise ValueError("must be loopback or anyone")
    return who


def _broker(text: str) -> str:
    if text == "memory":
        return text
    if text.startswith(("redis://", "rediss://", "unix://")):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (a bad port raises here, not at the first connection)
        except ValueError as exc:
            raise ValueError(f"not a valid Redis URL ({exc})") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("a Redis URL needs a host: redis://HOST:6379/0")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path: unix:///run/redis.sock")
        return text
    raise ValueError("must be 'memory' or a Redis URL (redis://, rediss://, unix://)")


def _redis_prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", text):
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return level


def _loop(text: str) -> str:
    loop = text.lower()
    if loop not in ("auto", "asyncio", "uvloop"):
        raise ValueError("must be auto, asyncio or uvloop")
    if loop == "uvloop" and not uvloop_installed():
        raise ValueError("uvloop is not installed (pip install 'streamer[uvloop]')")
    return loop


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _token(text: str) -> str | None:
    if text == "":
        raise ValueError("must not be empty (leave it out to publish from loopback only)")
    if any(ch.isspace() for ch in text) or not text.isprintable():
        raise ValueError("must be printable with no spaces")
    return text


def _host(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": _host,
    "port": _port,
    "media": _folder,
    "logs": _folder,
    "log_file": _log_file,
    "broker": _broker,
    "redis_prefix": _redis_prefix,
    "workers": _positive_int,
    "token": _token,
    "heartbeat": _positive_float,
    "history": _positive_int,
    "history_bytes": _positive_int,
    "retry": _positive_int,
    "max_body": _positive_int,
    "max_line": _positive_int,
    "max_buffer": _positive_int,
    "max_unsent": _positive_int,
    "send_timeout": _positive_float,
    "header_timeout": _positive_float,
    "idle_timeout": _positive_float,
    "max_connections": _positive_int,
    "own_log_access": _own_log_access,
    "shutdown_timeout": _positive_float,
    "log_level": _log_level,
    "loop": _loop,
}


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from flag values (``None`` = not given) and the environment.

    Raises :class:`SettingsError` with a one-line message naming the flag.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = flags.get(f.name)
        source = flag_name(f.name)
        if raw is None:
            raw = environ.get(env_name(f.name))
            source = env_name(f.name)
        if raw is None:
            if f.name == "media":  # the default folder must exist too
                raw, source = str(f.default), flag_name(f.name)
            else:
                continue
        try:
            values[f.name] = _PARSERS[f.name](raw)
        except ValueError as exc:
            reason = str(exc) if not str(exc).startswith("invalid literal") else "not a number"
            if "could not convert" in reason:
                reason = "not a number"
            raise SettingsError(f"{source}={raw!r}: {reason}") from None
    if "log_file" not in values and values.get("logs") is not None:
        values["log_file"] = values["logs"] / OWN_LOG_NAME
    settings = Settings(**values)
    check_log_file(settings.log_file)
    if settings.workers > 1 and settings.broker == "memory":
        raise SettingsError(
            f"--workers={settings.workers} needs a shared broker (--broker redis://HOST:6379/0): "
            "the memory broker lives in one process"
        )
    return settings


def check_log_file(path: Path | None) -> None:
    """Can the server append to its own log at ``path``? Checked at start, so a folder of
    that name, a missing folder or a read-only one is one clear line, not a traceback."""
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise SettingsError(cannot_write_own_log(path, exc)) from None


def cannot_write_own_log(path: Path, exc: OSError) -> str:
    """The one line that says why the own log cannot be written, and what to do."""
    return (
        f"cannot write the server's own log {path}: {exc.strerror}; "
        "choose another with --log-file FILE, or --log-file off"
    )
