"""streamer: Server-Sent Events hub, file delivery and live log tailing on aiohttp."""

__version__ = "0.1.0"

__all__ = ["__version__"]
