"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from aiohttp import web

from ..broker import Broker
from ..digests import DigestCache
from ..fanout import Fanout
from ..settings import Settings
from ..sources.loghub import LogHub
from .assets import Asset
from .sidecars import SidecarIndex
from .smallfiles import SmallFileCache
from .unsent import UnsentBudget

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
EVENTS_FANOUT = web.AppKey("events_fanout", Fanout)  # the broker delivers through it
FANOUTS = web.AppKey("fanouts", list[Fanout])  # every fan-out with streams: see web/streams.py
UNSENT = web.AppKey("unsent", UnsentBudget)  # the server-wide budget of unsent stream bytes
DIGESTS = web.AppKey("digests", DigestCache)
SIDECAR_INDEX = web.AppKey("sidecar_index", SidecarIndex)
SMALL_FILES = web.AppKey("small_files", SmallFileCache)
LOG_HUB = web.AppKey("log_hub", LogHub)
PAGE_ASSETS = web.AppKey("page_assets", dict[str, Asset])  # the dashboard: web/assets.py
WORKER = web.AppKey("worker", int)  # which of --workers this process is (absent: the only one)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() at startup
REQUEST_ID = web.RequestKey("request_id", str)
