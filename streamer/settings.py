"""All configuration in one frozen dataclass, built from CLI flags and ``STREAMER_*`` env.

Every setting has one name (``heartbeat``), one flag (``--heartbeat``) and one
environment variable (``STREAMER_HEARTBEAT``). A flag given on the command
line wins over the environment, which wins over the default. Values arrive as
strings and are checked here, so a bad one fails at start with one clear line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import SettingsError

ENV_PREFIX = "STREAMER_"
KIB = 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration of one server process."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "TCP port (0 picks a free one)"})
    media: Path = field(default=Path("media"), metadata={"help": "folder served under /files/"})
    logs: Path | None = field(
        default=None, metadata={"help": "folder of log files to tail (and the server's own log)"}
    )
    broker: str = field(default="memory", metadata={"help": "event broker: memory"})
    workers: int = field(default=1, metadata={"help": "worker processes (1 with memory)"})
    token: str | None = field(default=None, metadata={"help": "bearer token required to publish"})
    heartbeat: float = field(default=15.0, metadata={"help": "seconds between idle pings"})
    history: int = field(default=10_000, metadata={"help": "events kept for resume"})
    history_bytes: int = field(
        default=64 * KIB * KIB, metadata={"help": "bytes of events kept for resume"}
    )
    retry: int = field(default=2000, metadata={"help": "client reconnect delay (ms)"})
    max_body: int = field(default=64 * KIB, metadata={"help": "largest publish body (bytes)"})
    max_line: int = field(default=64 * KIB, metadata={"help": "longest log line sent whole"})
    max_buffer: int = field(
        default=1024 * KIB, metadata={"help": "unsent bytes before a slow subscriber is cut"}
    )
    shutdown_timeout: float = field(
        default=1.0, metadata={"help": "seconds streams get to flush at shutdown"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def setting_help() -> dict[str, str]:
    """Help text for every setting, keyed by name (the CLI builds its flags from this)."""
    return {f.name: f.metadata["help"] for f in fields(Settings)}


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
    if not path.is_dir():
        raise ValueError(f"folder not found: {text}")
    return path.resolve()


def _broker(text: str) -> str:
    if text == "memory":
        return text
    if text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("the redis broker is not available in this version; use memory")
    raise ValueError("must be 'memory'")


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return level


def _token(text: str) -> str | None:
    if text == "":
        return None
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
    "broker": _broker,
    "workers": _positive_int,
    "token": _token,
    "heartbeat": _positive_float,
    "history": _positive_int,
    "history_bytes": _positive_int,
    "retry": _positive_int,
    "max_body": _positive_int,
    "max_line": _positive_int,
    "max_buffer": _positive_int,
    "shutdown_timeout": _positive_float,
    "log_level": _log_level,
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
    settings = Settings(**values)
    if settings.workers > 1 and settings.broker == "memory":
        raise SettingsError(
            "--workers > 1 needs a shared broker: the memory broker lives in one process"
        )
    return settings
