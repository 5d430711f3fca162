"""Command line: argument parsing only. ``streamer serve`` or ``python -m streamer``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import SettingsError, StartupError
from .logconfig import configure_logging
from .settings import env_name, flag_name, load_settings, setting_help, uvloop_installed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Server-Sent Events hub, file delivery and live log tails.",
        epilog="'streamer serve --help' lists the server's flags; 'streamer' with no "
        "command (or only flags) runs serve.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server (the default)",
        description="Run the server. Every flag can also be set with its STREAMER_* "
        "environment variable (shown in brackets); a flag wins over the environment.",
    )
    for name, shown in setting_help().items():
        default = f" (default: {shown.default})" if shown.default is not None else ""
        serve.add_argument(
            flag_name(name),
            dest=name,
            default=None,
            metavar=shown.metavar,
            help=f"{shown.text}{default} [{env_name(name)}]",
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
    if settings.workers > 1:
        from .workers import supervise

        return supervise(settings)
    from .server import serve  # after settings: a bad flag fails before heavy imports

    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
            runner.run(serve(settings))
    except StartupError as exc:  # the port is taken, the own log cannot be written...
        print(f"streamer: error: {exc}", file=sys.stderr)
        return 2
    return 0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``--loop`` names (``None``: asyncio's default). asyncio stays the
    default: uvloop serves small files and deep write buffers faster but has no
    sendfile, so big downloads cost more CPU on it (BENCHMARKS.md, "Event loop")."""
    if name == "uvloop" or (name == "auto" and uvloop_installed()):
        import uvloop

        return uvloop.new_event_loop
    return None


if __name__ == "__main__":
    sys.exit(main())
