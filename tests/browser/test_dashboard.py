"""The dashboard against a running `edgeloop run` of the demo config (tests/running_appliance),
in real headless Chromium: values that change, a stale value shown stale, a viewer with
no stop button whose forged stop is refused, an operator's stop, banner and reset, an
alarm acknowledged, a phone's width; and the screenshot in docs/.

One appliance and one browser serve the module; each test leaves the appliance as it
found it (e-stop released and reset, faults over)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from edgeloop.demo_config import PORTS
from tests.browser.dashboard_page import PHONE, chromium, dashboard, row
from tests.conftest import REPO
from tests.running_appliance import Appliance, running_appliance

pytestmark = pytest.mark.asyncio(loop_scope="module")

VIEWER = "demo-viewer"  # config/demo.yaml's tokens
OPERATOR = "demo-operator"
SEEN_S = 20.0  # a change in the World on the page, on a loaded 2-core box
STALE_S = 20.0  # the serial stream's timeout is 2 s
BACK_S = 60.0  # a killed io process replaced and its devices online again
SCREENSHOT = REPO / "docs" / "dashboard.png"
RUN_COIL = 0  # press1.Press.run on the PLC (config/demo.yaml); its safe value is false


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def appliance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Appliance]:
    async with running_appliance(tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def http_port(appliance: Appliance) -> int:
    return appliance.place.port_base + PORTS[("network", "websocket", "port")]


async def _value(page: Page, field: str) -> str:
    return await page.locator(f"{row(field)} td.value").inner_text()


async def test_the_page_shows_values_that_change(appliance: Appliance, browser: Browser) -> None:
    async with dashboard(browser, http_port(appliance), VIEWER) as page:
        first = await _value(page, "press1.Press.cycles")
        # the PLC's registers count up: the page follows without a reload
        await expect(page.locator(f"{row('press1.Press.cycles')} td.value")).not_to_have_text(
            first, timeout=SEEN_S * 1000
        )
        await expect(page.locator(row("press1.Press.pressure"))).to_contain_text("bar")
        await expect(page.locator(row("room1.Climate.temperature"))).to_contain_text("GOOD")
        await expect(page.locator("#loop-rate")).to_contain_text("Hz", timeout=SEEN_S * 1000)
        await expect(page.locator("#loop-histogram tr").first).to_contain_text(
            "≤", timeout=SEEN_S * 1000
        )
        await expect(page.locator("#devices")).to_contain_text("plc1")


async def test_a_value_is_shown_stale_when_its_simulator_stops(
    appliance: Appliance, browser: Browser
) -> None:
    async with dashboard(browser, http_port(appliance), VIEWER) as page:
        temperature = page.locator(row("room1.Climate.temperature"))
        await expect(temperature).to_have_class("q-good", timeout=SEEN_S * 1000)
        appliance.fault("serial", "silence 6")
        await expect(temperature).to_have_class("q-stale", timeout=STALE_S * 1000)
        await expect(temperature).to_contain_text("STALE")
        # struck through and greyed: never drawn like a fresh value
        style = await temperature.locator("td.value").evaluate(
            "e => getComputedStyle(e).textDecorationLine"
        )
        assert style == "line-through"
        await expect(temperature).to_have_class("q-good", timeout=STALE_S * 1000)


async def test_a_viewer_has_no_stop_button_and_a_forged_stop_is_refused(
    appliance: Appliance, browser: Browser
) -> None:
    async with dashboard(browser, http_port(appliance), VIEWER) as page:
        await expect(page.locator("#role")).to_have_text("viewer")
        await expect(page.locator("#stop")).to_be_hidden()
        await expect(page.locator("#reset")).to_be_hidden()
        # What the page would not offer, sent anyway on a connection with the page's token
        answer = await page.evaluate(FORGED_STOP, VIEWER)
        assert answer[0] == "edgeloop.Error" and answer[2]["code"] == "forbidden", answer
        await expect(page.locator("#safe-state")).to_have_text("normal")
        assert not [e for e in appliance.audit_entries() if "forged" in json.dumps(e)]


FORGED_STOP = """token => new Promise((resolve, reject) => {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => ws.send(JSON.stringify(["edgeloop.Hello", "8da04678790f4563",
    {client_id: "forger", token, role: "viewer", protocol_version: 1}]));
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message[0] === "edgeloop.Welcome") {
      ws.send(JSON.stringify(["safety.Stop", "5fd9d59de3c96492", {reason: "forged"}]));
    } else { resolve(message); ws.close(); }
  };
  ws.onerror = () => reject(new Error("websocket error"));
})"""


async def test_an_operator_stops_sees_the_banner_and_resets_once_the_estop_is_clear(
    appliance: Appliance, browser: Browser
) -> None:
    async with dashboard(browser, http_port(appliance), OPERATOR) as page:
        banner = page.locator("#estop")
        result = page.locator("#command-result")
        await expect(banner).to_be_hidden()
        await page.click("#stop")
        await expect(banner).to_be_visible(timeout=SEEN_S * 1000)
        await expect(banner).to_contain_text("SAFE STATE")
        await expect(page.locator("#estop-causes")).to_contain_text("stop")
        await expect(page.locator("#estop-held")).to_contain_text("press1.Press.run = false")
        await expect(result).to_contain_text("stop: accepted")
        assert await appliance.until(
            lambda: False in appliance.plc.coil_writes(RUN_COIL), SEEN_S, "the run coil off"
        )
        await appliance.press(True)
        try:
            await expect(page.locator("#estop-causes")).to_contain_text(
                "estop", timeout=SEEN_S * 1000
            )
            await page.click("#reset")
            await expect(result).to_contain_text("reset: refused", timeout=SEEN_S * 1000)
            await expect(result).to_have_class("result refused")
            await expect(banner).to_be_visible()
        finally:
            await appliance.press(False)
        await _reset_until_accepted(page, appliance)  # refused until the release is seen
        await expect(banner).to_be_hidden(timeout=SEEN_S * 1000)
        # the audit log, pushed to the page as it grows: the stop, the refused reset
        audit = page.locator("#audit")
        await expect(audit).to_contain_text("estop.software", timeout=SEEN_S * 1000)
        await expect(audit).to_contain_text("safety.reset_refused", timeout=SEEN_S * 1000)


async def _acknowledged(alarm: Locator) -> None:
    """Until the row shows the acknowledgement. On a loaded machine the silenced drive
    may come back and drop out again within the silence (its watchdog is 0.5 s): that is
    a new activation, unacknowledged again, and is acknowledged again."""
    deadline = time.monotonic() + SEEN_S
    while "acked by" not in (await alarm.inner_text()):
        if await alarm.get_attribute("class") == "alarm-normal":
            return  # acknowledged and cleared between two looks
        assert time.monotonic() < deadline, f"never acknowledged: {await alarm.inner_text()}"
        button = alarm.get_by_role("button", name="acknowledge")
        if await button.count():
            # the row is redrawn with each update: a button gone meanwhile is looked at again
            with contextlib.suppress(PlaywrightTimeout):
                await button.click(timeout=1000)
        await asyncio.sleep(0.1)  # polling the page; the deadline bounds it


async def test_an_operator_acknowledges_an_alarm(appliance: Appliance, browser: Browser) -> None:
    async with dashboard(browser, http_port(appliance), OPERATOR) as page:
        alarm = page.locator('#alarms tr[data-key="watchdog:drive1"]')
        appliance.fault("can", "silence 2")  # past the drive's 0.5 s watchdog
        await expect(alarm).to_be_visible(timeout=SEEN_S * 1000)
        await expect(alarm).to_contain_text("unacknowledged")
        await alarm.get_by_role("button", name="acknowledge").click()
        await expect(page.locator("#command-result")).to_contain_text(
            "acknowledge watchdog:drive1: accepted", timeout=SEEN_S * 1000
        )
        await _acknowledged(alarm)
        await expect(alarm.get_by_role("button")).to_have_count(0)
        # the drive back, its watchdog's safe state over: the alarm ends as normal
        await expect(alarm).to_have_class("alarm-normal", timeout=SEEN_S * 1000)
        await expect(page.locator("#estop")).to_be_hidden(timeout=SEEN_S * 1000)


async def test_a_token_that_is_not_ours_is_asked_for_again(
    appliance: Appliance, browser: Browser
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{http_port(appliance)}/?token=not-a-token-of-ours")
        await expect(page.locator("#login")).to_be_visible(timeout=SEEN_S * 1000)
        await expect(page.locator("#login-error")).to_have_text("Not a token of this appliance.")
    finally:
        await context.close()


async def test_a_phone_sees_the_page_without_scrolling_sideways(
    appliance: Appliance, browser: Browser
) -> None:
    async with dashboard(browser, http_port(appliance), OPERATOR, PHONE) as page:
        await expect(page.locator("#stop")).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (
            f"the page is {width} px wide on a {PHONE['width']} px phone"
        )


async def test_the_page_shows_it_is_disconnected_and_comes_back_by_itself(
    appliance: Appliance, browser: Browser
) -> None:
    async with dashboard(browser, http_port(appliance), OPERATOR) as page:
        # The io process (the HTTP and WebSocket server) killed: the supervisor starts
        # another, and the lost io latched the safe state, which the operator resets.
        os.kill(appliance.io_pid(), signal.SIGKILL)
        await expect(page.locator("#disconnected")).to_be_visible(timeout=SEEN_S * 1000)
        await expect(page.locator("#link")).to_have_attribute(
            "data-state", "live", timeout=BACK_S * 1000
        )
        await expect(page.locator("#disconnected")).to_be_hidden()
        await expect(page.locator("#estop-causes")).to_contain_text("io_lost")
        cycles = page.locator(row("press1.Press.cycles"))
        await expect(cycles).to_contain_text("GOOD", timeout=SEEN_S * 1000)
        await _reset_until_accepted(page, appliance)
        await expect(page.locator("#estop")).to_be_hidden(timeout=SEEN_S * 1000)


async def _reset_until_accepted(page: Page, appliance: Appliance) -> None:
    """Reset from the page until the appliance takes it: refused while a cause still
    holds (the io process's drivers coming back)."""
    result = page.locator("#command-result")
    give_up = asyncio.get_running_loop().time() + BACK_S
    while True:
        await page.evaluate("document.getElementById('command-result').textContent = ''")
        await page.click("#reset")
        await expect(result).to_contain_text("reset: ", timeout=SEEN_S * 1000)
        if "accepted" in await result.inner_text():
            return
        assert asyncio.get_running_loop().time() < give_up, await result.inner_text()
        await asyncio.sleep(0.5)  # the next try; the deadline bounds them


async def test_the_screenshot_in_docs(appliance: Appliance, browser: Browser) -> None:
    async with (
        appliance.robot("robot-1"),
        appliance.robot("robot-2"),
        dashboard(browser, http_port(appliance), OPERATOR) as page,
    ):
        await page.evaluate("localStorage.removeItem('edgeloop.trends')")
        for field in ("tank1.TankLevel.level_m", "tank2.TankLevel.level_m"):
            option = page.locator(f'#trend-field option[value="{field}"]')
            await expect(option).to_have_count(1, timeout=SEEN_S * 1000)  # in the data log
            await page.select_option("#trend-field", field)
            await page.click("#trend-add")
        await expect(page.locator("#trend-picked li")).to_have_count(2)
        await page.wait_for_function(
            "() => Number(document.getElementById('chart').dataset.points) > 2",
            timeout=SEEN_S * 1000,
        )
        await expect(page.locator("#robots tr")).to_have_count(2, timeout=SEEN_S * 1000)
        picture = await page.screenshot(full_page=True)
        if os.environ.get("EDGELOOP_SCREENSHOT"):  # the one in docs/ is renewed on demand
            SCREENSHOT.write_bytes(picture)
        assert picture[:8] == b"\x89PNG\r\n\x1a\n"
        assert SCREENSHOT.exists()
