"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; its own browser downloads are never used), opened on a running appliance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
# Root in a container has no user namespace for Chromium's sandbox.
ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
LIVE_S = 30.0  # the page loaded, connected and showing the World, on a loaded 2-core box
PHONE = {"width": 390, "height": 844}


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def dashboard(
    browser: Browser, http_port: int, token: str, viewport: dict[str, int] | None = None
) -> AsyncIterator[Page]:
    """The page opened with ``?token=``, once it is live; every request it made is
    checked to have gone to the appliance only (no CDN, nothing from the internet)."""
    context = await browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    page = await context.new_page()
    elsewhere: list[str] = []
    origin = f"http://127.0.0.1:{http_port}/"
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith((origin, f"ws://127.0.0.1:{http_port}/"))
            else elsewhere.append(r.url)
        ),
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(f"{origin}?token={token}")
        await page.wait_for_selector("#link[data-state=live]", timeout=LIVE_S * 1000)
        await page.wait_for_selector("#values tr", timeout=LIVE_S * 1000)
        yield page
        assert not elsewhere, f"requests off the appliance: {elsewhere}"
        assert not errors, f"errors in the page: {errors}"
    finally:
        await context.close()


def row(field: str) -> str:
    """The selector of the values table's row of ``entity.Component.field``."""
    return f'#values tr[data-key="{field}"]'
