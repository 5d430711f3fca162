"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against real
servers in this process (and a cutting proxy between them where the network must fail).

``STREAMER_SCREENSHOTS=docs pytest tests/test_dashboard.py -k screenshots`` writes the
README's screenshots to ``docs/``; any other run writes them to a temporary folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Response,
    async_playwright,
    expect,
)

from streamer.server import running

from .helpers import (
    MEDIA,
    ROOT,
    free_port,
    make_settings,
    publish,
    require,
    require_tool,
    wait_for,
)
from .logs_support import append
from .proxy import CuttingProxy

StartServer = Callable[..., Awaitable[str]]
CHROMIUM = os.environ.get("STREAMER_CHROMIUM", "/usr/bin/chromium")
RETRY_MS = 300  # the servers' retry: the page reconnects this soon
XSS = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__xss = 1</script>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox"],  # root in CI
        )
        yield browser
        await browser.close()


class Watched:
    """A page and what it said: console messages of level warning or error, uncaught
    errors, dialogs (an ``alert`` would be a script that should not have run), and
    responses with an error status."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.complaints: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.complaints.append(f"page error: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("warning", "error"):
            self.complaints.append(f"console {message.type}: {message.text}")

    async def _dialog(self, dialog: Dialog) -> None:
        self.complaints.append(f"dialog: {dialog.type} {dialog.message}")
        await dialog.dismiss()


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(5000)
    yield Watched(page)
    await context.close()


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    """A copy of the sample media folder that the tests may change."""
    folder = tmp_path / "media"
    shutil.copytree(MEDIA, folder)
    return folder


@pytest.fixture
async def site(start_server: StartServer, media_dir: Path, logs_dir: Path) -> str:
    return await start_server(media=media_dir, logs=logs_dir, retry=RETRY_MS)


async def connected(page: Page) -> None:
    await expect(page.locator(".conn")).to_have_attribute("data-state", "connected")


def add_lines(log: Path, text: str) -> None:
    append(log, text.encode())


def shown_ids(page: Page) -> Awaitable[list[str]]:
    """The ids of the events on the page, oldest first."""
    return page.eval_on_selector_all(".event", "rows => rows.map(r => r.dataset.id).reverse()")


# -- the page -----------------------------------------------------------------------------


async def test_every_view_loads_without_warnings_errors_or_unlabelled_fields(
    site: str, watched: Watched, logs_dir: Path
) -> None:
    page = watched.page
    failed: list[str] = []

    def note_failure(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", note_failure)
    add_lines(logs_dir / "app.log", "one line\n")
    for view, ready in [
        ("#/events", ".conn[data-state=connected]"),
        ("#/files/", ".entry[data-name='hello.txt']"),
        ("#/files/docs", ".crumbs [aria-current=page]:text('docs')"),
        ("#/logs", ".entry[data-name='app.log']"),
        ("#/logs/app.log", ".log .line:text('one line')"),
    ]:
        await page.goto(f"{site}/{view}")
        await page.wait_for_selector(ready)
        unlabelled = await page.eval_on_selector_all(
            "input, select, textarea, button",
            """fields => fields.filter(f => !(f.labels && f.labels.length)
                && !f.getAttribute('aria-label') && !f.textContent.trim())
                .map(f => f.outerHTML)""",
        )
        assert unlabelled == [], view
    await expect(page.locator("[data-health=version]")).to_have_text("0.1.0")
    await expect(page.locator("#health")).to_have_attribute("data-status", "ok")
    await page.reload()
    await page.keyboard.press("Tab")  # the first stop is the skip link, and it shows
    assert await page.evaluate("document.activeElement.className") == "skip"
    assert watched.complaints == []
    assert failed == []


async def test_a_published_event_appears_newest_first_in_its_topic_only(
    site: str, watched: Watched, http: aiohttp.ClientSession
) -> None:
    page = watched.page
    await page.goto(f"{site}/#/events?topic=news&topic=sport")
    await connected(page)
    assert await page.input_value("#topics") == "news sport"
    first = await publish(http, site, "news", json_body={"title": "hello", "n": 1})
    await publish(http, site, "weather", "not watched")
    second = await publish(http, site, "sport", "two\nlines", event="score")
    await expect(page.locator(".event")).to_have_count(2)
    assert await shown_ids(page) == [first, second]
    newest = page.locator(".event").first
    await expect(newest.locator(".name")).to_have_text("score")
    await expect(newest.locator(".data")).to_have_text("two\nlines")
    await expect(page.locator(f".event[data-id='{first}'] .data")).to_have_text(
        '{\n  "title": "hello",\n  "n": 1\n}'
    )
    await expect(page.locator(".conn .last-id")).to_have_text(second)


async def test_the_publish_form_publishes(site: str, watched: Watched) -> None:
    page = watched.page
    await page.goto(f"{site}/#/events?topic=forms")
    await connected(page)
    await page.click("summary")
    await page.fill("#pub-topic", "forms")
    await page.fill("#pub-event", "ping")
    await page.fill("#pub-data", '{"from": "the form"}')
    await page.click("form.publish button[type=submit]")
    await expect(page.locator(".result")).to_have_text(re.compile(r"Published \S+ to forms\."))
    await expect(page.locator(".event .name")).to_have_text("ping")
    await page.fill("#pub-topic", "bad topic!")  # the server's answer is shown
    await page.eval_on_selector("#pub-topic", "f => f.removeAttribute('pattern')")
    await page.click("form.publish button[type=submit]")
    await expect(page.locator(".result")).to_have_attribute("data-ok", "no")


async def test_a_cut_stream_resumes_with_nothing_lost_or_doubled(
    site: str, watched: Watched, http: aiohttp.ClientSession
) -> None:
    page = watched.page
    async with CuttingProxy(site) as proxy:
        await page.goto(f"{proxy.url}/#/events?topic=t")
        await connected(page)
        ids = [await publish(http, site, "t", f"before {n}") for n in range(3)]
        await expect(page.locator(".event")).to_have_count(3)

        def streams() -> list[bytes]:
            return [head for head in proxy.requests if b"GET /events?topic=t " in head]

        for round_ in range(2):
            proxy.cut()
            # published straight to the server while the page is (mostly) away from it
            ids += [await publish(http, site, "t", f"cut {round_} {n}") for n in range(5)]
            await wait_for(lambda expected=round_ + 2: len(streams()) == expected)
            await connected(page)
        ids += [await publish(http, site, "t", f"after {n}") for n in range(3)]
        await expect(page.locator(".event")).to_have_count(len(ids))
        assert await shown_ids(page) == ids
        resumes = streams()
        assert len(resumes) == 3
        assert b"\r\nlast-event-id: " + ids[2].encode() + b"\r\n" in resumes[1].lower()
        assert b"\r\nlast-event-id: " + ids[7].encode() + b"\r\n" in resumes[2].lower()


async def test_server_down_then_restarted_shows_down_then_the_reset(
    watched: Watched, http: aiohttp.ClientSession
) -> None:
    page = watched.page
    settings = make_settings(port=free_port(), retry=RETRY_MS, shutdown_timeout=1.0)
    async with running(settings) as url:
        await page.goto(f"{url}/#/events?topic=t")
        await connected(page)
        before = await publish(http, url, "t", "before the restart")
        await expect(page.locator(".event")).to_have_count(1)
        stopped = time.monotonic()
    # within the retry interval (and well before the second attempt would tell)
    await expect(page.locator(".conn")).to_have_attribute("data-state", "down", timeout=RETRY_MS)
    took = time.monotonic() - stopped
    assert took < RETRY_MS / 1000
    await expect(page.locator("#health")).to_have_attribute("data-status", "down", timeout=3000)
    async with running(settings) as url:  # the page reconnects, and hears why it must start over
        await expect(page.locator(".conn")).to_have_attribute("data-state", "reset")
        await expect(page.locator(".conn .detail")).to_have_text(": epoch")
        reset = page.locator(".event.marker.reset")
        await expect(reset).to_contain_text("History reset (epoch)")
        after = await publish(http, url, "t", "after the restart")
        await expect(page.locator(f".event[data-id='{after}']")).to_be_visible()
        ids = await shown_ids(page)
        assert ids[0] == before  # then the reset, then
        assert ids[-1] == after
        assert len(ids) == 3


# -- files ----------------------------------------------------------------------------------


async def test_a_new_media_file_appears_and_downloads_byte_exact(
    site: str, watched: Watched, media_dir: Path, tmp_path: Path
) -> None:
    page = watched.page
    await page.goto(f"{site}/#/files/")
    await connected(page)
    names = await page.eval_on_selector_all(".entry", "rows => rows.map(r => r.dataset.name)")
    assert names[0] == "docs"  # folders first
    body = os.urandom(300_000)
    (media_dir / "new file.bin").write_bytes(body)
    row = page.locator(".entry[data-name='new file.bin']")
    await expect(row.locator(".size")).to_have_text("293 KiB")
    async with page.expect_download() as download_info:
        await row.locator("a.button:text('Download')").click()
    download = await download_info.value
    assert download.suggested_filename == "new file.bin"
    assert await asyncio.to_thread(Path(await download.path()).read_bytes) == body

    await row.locator("button:text('sha-256')").click()
    await expect(row.locator(".sha256")).to_have_text(hashlib.sha256(body).hexdigest())
    await row.locator("button:text('curl')").click()
    command = await row.locator("input.command").input_value()
    assert command == f"curl -C - -O '{site}/files/new%20file.bin'"
    curl = require_tool("curl")
    args = shlex.split(command)
    saved = tmp_path / "by-curl"
    saved.mkdir()
    process = await asyncio.create_subprocess_exec(curl, "-sS", *args[1:], cwd=saved)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert (saved / "new%20file.bin").read_bytes() == body  # curl -O keeps the URL's name

    (media_dir / "new file.bin").unlink()
    await expect(row).to_have_count(0)
    (media_dir / "docs" / "inside.txt").write_text("not in this folder")
    (media_dir / "later.txt").write_text("in this folder")
    await expect(page.locator(".entry[data-name='later.txt']")).to_be_visible()
    await expect(page.locator(".entry[data-name='inside.txt']")).to_have_count(0)


async def test_a_missing_folder_says_so(site: str, watched: Watched) -> None:
    page = watched.page
    await page.goto(f"{site}/#/files/no/such")
    await expect(page.locator(".empty")).to_contain_text("Not Found")


# -- logs -----------------------------------------------------------------------------------


async def test_appended_lines_show_and_a_rotation_shows_its_marker(
    site: str, watched: Watched, logs_dir: Path
) -> None:
    page = watched.page
    log = logs_dir / "app.log"
    add_lines(log, "old 1\nold 2\nold 3\n")
    await page.goto(f"{site}/#/logs/app.log?tail=100")
    await connected(page)
    lines = page.locator(".log .line")
    await expect(lines).to_have_text(["old 1", "old 2", "old 3"])
    add_lines(log, "new 4\n\x1b[1;31mred\x1b[0m and plain\n")
    await expect(lines).to_have_count(5)
    red = lines.nth(4).locator("span.fg-1.b")
    await expect(red).to_have_text("red")
    await expect(lines.nth(4)).to_have_text("red and plain")  # no escape noise
    log.rename(logs_dir / "app.log.1")
    add_lines(log, "fresh 1\n")
    marker = page.locator(".log .marker.rotated")
    await expect(marker).to_have_text("log rotated: following the new file")
    await expect(page.locator(".log .marker.rotated + .line")).to_have_text("fresh 1")


async def test_the_filter_hides_lines_that_do_not_match(
    site: str, watched: Watched, logs_dir: Path
) -> None:
    page = watched.page
    log = logs_dir / "app.log"
    add_lines(log, "alpha one\nbeta two\nALPHA three\ngamma four\n")
    await page.goto(f"{site}/#/logs/app.log")
    lines = page.locator(".log .line")
    await expect(lines).to_have_count(4)
    await page.fill("#log-filter", "alpha")  # plain text: the server greps, case-blind
    await expect(lines).to_have_text(["alpha one", "ALPHA three"])
    await expect(page.locator(".log mark")).to_have_text(["alpha", "ALPHA"])
    await expect(page.locator("#log-filter-help")).to_have_text("filtered by the server")
    assert "filter=alpha" in page.url
    add_lines(log, "beta again\nalpha live\n")
    await expect(lines).to_have_text(["alpha one", "ALPHA three", "alpha live"])
    await page.check("#log-regex")
    await page.fill("#log-filter", "^(beta|gamma)")  # a regex: the page filters
    await expect(lines).to_have_text(["beta two", "gamma four", "beta again"])
    await expect(page.locator("#log-filter-help")).to_have_text("filtered in this page")
    await page.fill("#log-filter", "(unclosed")
    await expect(page.locator("#log-filter")).to_have_attribute("aria-invalid", "true")
    await page.fill("#log-filter", "")
    await expect(lines).to_have_count(6)


async def test_scrolling_up_holds_the_view_until_jump_to_live(
    site: str, watched: Watched, logs_dir: Path
) -> None:
    page = watched.page
    log = logs_dir / "app.log"
    add_lines(log, "".join(f"line {n}\n" for n in range(200)))
    await page.goto(f"{site}/#/logs/app.log")
    await expect(page.locator(".log .line")).to_have_count(200)
    jump = page.locator("button.jump")
    await expect(jump).to_be_hidden()
    await page.locator(".log").hover()
    await page.mouse.wheel(0, -2000)
    await expect(jump).to_be_visible()
    top = await page.eval_on_selector(".log", "p => p.scrollTop")
    add_lines(log, "".join(f"more {n}\n" for n in range(30)))
    await expect(jump).to_have_text("Jump to live (30 new)")
    assert await page.eval_on_selector(".log", "p => p.scrollTop") == top  # held still
    await jump.click()
    await expect(jump).to_be_hidden()
    await expect(page.locator(".log .line").last).to_have_text("more 29")
    assert await page.eval_on_selector(
        ".log", "p => p.scrollHeight - p.scrollTop - p.clientHeight < 24"
    )

    await page.click("button:text('Pause')")
    add_lines(log, "while paused\n")
    await expect(page.locator(".count")).to_have_text("231 received · 230 shown")
    await page.click("button:text('Resume')")
    await expect(page.locator(".log .line").last).to_have_text("while paused")
    async with page.expect_download() as download_info:
        await page.click("button:text('Download shown')")
    saved = await asyncio.to_thread(Path(await (await download_info.value).path()).read_text)
    assert saved.splitlines()[-2:] == ["more 29", "while paused"]
    assert len(saved.splitlines()) == 231
    await page.click("button:text('Clear')")
    await expect(page.locator(".log .line")).to_have_count(0)


async def test_the_page_keeps_a_bounded_number_of_rows(
    site: str, watched: Watched, logs_dir: Path
) -> None:
    page = watched.page
    await page.goto(f"{site}/#/logs/app.log")
    await connected(page)
    add_lines(logs_dir / "app.log", "".join(f"row {n}\n" for n in range(5000)))
    await expect(page.locator(".count")).to_have_text("5000 received · 1500 shown")
    await expect(page.locator(".log .line").first).to_have_text("row 3500")
    await expect(page.locator(".log .line").last).to_have_text("row 4999")


# -- what must never happen -----------------------------------------------------------------


async def test_user_data_is_shown_as_text_and_runs_nothing(
    site: str,
    watched: Watched,
    http: aiohttp.ClientSession,
    media_dir: Path,
    logs_dir: Path,
) -> None:
    page = watched.page
    (media_dir / f"{XSS}.txt").write_text(SCRIPT)
    (logs_dir / f"{XSS}.log").write_text(f"{XSS}\n{SCRIPT}\n")
    await page.goto(f"{site}/#/events")
    await connected(page)
    await publish(http, site, "x", f"{XSS}\n{SCRIPT}")
    await publish(http, site, "x", json_body={"html": XSS})
    await expect(page.locator(".event")).to_have_count(2)
    await expect(page.locator(".event .data").last).to_have_text(f"{XSS}\n{SCRIPT}")
    await expect(page.locator(".event .data").first).to_have_text(f'{{\n  "html": "{XSS}"\n}}')
    await page.goto(f"{site}/#/files/")
    await expect(page.locator(".entry .name").filter(has_text=XSS)).to_have_text(f"{XSS}.txt")
    await page.goto(f"{site}/#/logs")
    await page.click(f"a:text('{XSS}.log')")
    await expect(page.locator(".log .line")).to_have_text([XSS, SCRIPT])
    await expect(page.locator(".log-title")).to_contain_text(f"{XSS}.log")
    assert await page.evaluate("document.querySelectorAll('main img, main script').length") == 0
    assert await page.evaluate("window.__xss") is None
    assert [c for c in watched.complaints if "dialog" in c] == []


async def test_a_phone_width_has_no_horizontal_scroll(
    site: str, browser: Browser, http: aiohttp.ClientSession, media_dir: Path, logs_dir: Path
) -> None:
    long = "x" * 240
    (media_dir / f"{long}.bin").write_bytes(b"1")
    add_lines(logs_dir / "app.log", f"{long}\nword " * 3 + "\n")
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    try:
        for view, ready in [
            ("#/events", ".event"),
            ("#/files/", ".entry"),
            ("#/logs", ".entry"),
            ("#/logs/app.log", ".log .line"),
        ]:
            await page.goto(f"{site}/{view}")
            if view == "#/events":
                await connected(page)
                await publish(http, site, "t", json_body={"long": long})
            await page.wait_for_selector(ready)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, view
    finally:
        await context.close()


async def test_screenshots_of_the_three_views(
    site: str,
    browser: Browser,
    http: aiohttp.ClientSession,
    logs_dir: Path,
    tmp_path: Path,
) -> None:
    where = Path(os.environ.get("STREAMER_SCREENSHOTS") or tmp_path)
    if not where.is_absolute():
        where = ROOT / where
    context = await browser.new_context(viewport={"width": 1100, "height": 640})
    page = await context.new_page()
    log = logs_dir / "app.log"
    try:
        await page.goto(f"{site}/#/events?topic=orders&topic=alerts")
        await connected(page)
        await publish(http, site, "orders", json_body={"order": 1041, "items": 3, "total": "59.90"})
        await publish(http, site, "alerts", "disk /var is 91% full", event="warning")
        await publish(http, site, "orders", json_body={"order": 1042, "items": 1, "total": "12.00"})
        await expect(page.locator(".event")).to_have_count(3)
        await page.screenshot(path=where / "dashboard-events.png")
        await page.goto(f"{site}/#/files/")
        await page.wait_for_selector(".entry[data-name='sample.bin']")
        await page.locator(".entry[data-name='sample.bin'] button:text('curl')").click()
        await page.screenshot(path=where / "dashboard-files.png")
        add_lines(
            log,
            "".join(
                f"2026-12-03 12:00:{n:02d} \x1b[32mINFO\x1b[0m GET /files/sample.bin 200\n"
                if n % 7
                else f"2026-12-03 12:00:{n:02d} \x1b[1;31mERROR\x1b[0m upstream timed out\n"
                for n in range(40)
            ),
        )
        await page.goto(f"{site}/#/logs/app.log")
        await expect(page.locator(".log .line")).to_have_count(40)
        await page.fill("#log-filter", "error")
        await expect(page.locator(".log .line")).to_have_count(6)
        await page.fill("#log-filter", "")
        await expect(page.locator(".log .line")).to_have_count(40)
        await page.screenshot(path=where / "dashboard-logs.png")
    finally:
        await context.close()
    for name in ("events", "files", "logs"):
        assert (where / f"dashboard-{name}.png").stat().st_size > 10_000
