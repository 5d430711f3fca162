"""Command line: argument parsing only. ``streamer serve`` or ``python -m streamer``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import __version__
from .errors import SettingsError
from .logconfig import configure_logging
from .settings import env_name, flag_name, load_settings, setting_help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Server-Sent Events hub and file server. "
        "Every flag can also be set with its STREAMER_* environment variable.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default)")
    for name, help_text in setting_help().items():
        serve.add_argument(
            flag_name(name),
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{help_text} [{env_name(name)}]",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "serve")
    parser = build_parser()
    namespace = parser.parse_args(args)
    flags = {name: getattr(namespace, name) for name in setting_help()}
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from .server import serve  # after settings: a bad flag fails before heavy imports

    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # typically: the port is taken
        print(
            f"streamer: error: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
