"""Reference servers for bench/files.py: aiohttp's own ``add_static``, and a bare handler.

``--mode static``: ``app.router.add_static("/files", DIR)``, the way aiohttp
serves files out of the box (``FileResponse``: stat and open in the default
executor, ``loop.sendfile``).

``--mode bare``: the files read into memory once and answered by a handler
that returns ``web.Response(body=...)`` (a ``Range`` of ``bytes=A-B`` is
sliced): aiohttp's request overhead with no file I/O at all, the ceiling for
any aiohttp file server.

    python bench/baseline_static.py --media DIR --port 0 --mode static
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

from aiohttp import web

RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def bare_app(media: Path) -> web.Application:
    contents = {p.name: p.read_bytes() for p in media.iterdir() if p.stat().st_size < 2**28}

    async def handler(request: web.Request) -> web.Response:
        data = contents.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound
        match = RANGE.fullmatch(request.headers.get("Range", ""))
        if match:
            start, end = int(match[1]), int(match[2])
            return web.Response(
                status=206,
                body=data[start : end + 1],
                headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
            )
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/files/{name}", handler)
    return app


def static_app(media: Path) -> web.Application:
    app = web.Application()
    app.router.add_static("/files", media)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--media", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["static", "bare"], default="static")
    args = parser.parse_args()
    app = static_app(args.media) if args.mode == "static" else bare_app(args.media)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
