"""The HTTP face of a running `edgeloop run` of the demo config, its devices around it:
/healthz turns degraded while the CAN drive is silent and ok once it is heard again;
/metrics shows an e-stop press (pressed, counted, the safe state's estop kind) and its
release; the trends read the demo's data log; /healthz fails while edgeloop-ctl is
stopped (SIGSTOP) and recovers after SIGCONT.

One appliance serves the module; each test leaves it as it found it (released, reset,
running).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.demo_config import PORTS
from tests.process_tree import child_named
from tests.running_appliance import Appliance, running_appliance

pytestmark = pytest.mark.asyncio(loop_scope="module")

VIEWER_TOKEN = "demo-viewer"  # config/demo.yaml's
CONTROL_TIMEOUT_S = 6.0  # the supervisor exits after it; /healthz fails at half
DRIVE_SILENT_S = 4


def _edit(config: dict[str, Any]) -> None:
    config["runtime"]["control_timeout_s"] = CONTROL_TIMEOUT_S


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def appliance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Appliance]:
    async with running_appliance(tmp_path_factory.mktemp("http-demo"), _edit) as running:
        yield running


def _port(appliance: Appliance) -> int:
    return appliance.place.port_base + PORTS[("network", "websocket", "port")]


def _get_now(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Cookie", f"edgeloop_token={token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _get(appliance: Appliance, path: str, token: str | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(_get_now, _port(appliance), path, token)


async def _health_until(
    appliance: Appliance, wanted: Callable[[int, dict[str, Any]], bool], deadline_s: float
) -> dict[str, Any]:
    give_up = time.monotonic() + deadline_s
    while True:
        status, body = await _get(appliance, "/healthz")
        found: dict[str, Any] = json.loads(body)
        if wanted(status, found):
            return found
        assert time.monotonic() < give_up, f"/healthz: {status} {found}"
        await asyncio.sleep(0.1)


async def _metrics(appliance: Appliance) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Each family's samples by their labels."""
    status, body = await _get(appliance, "/metrics", VIEWER_TOKEN)
    assert status == 200
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(body.decode())
    }


async def _metrics_until(
    appliance: Appliance, wanted: Callable[[dict[str, Any]], bool], deadline_s: float, what: str
) -> dict[str, Any]:
    give_up = time.monotonic() + deadline_s
    while not wanted(found := await _metrics(appliance)):
        assert time.monotonic() < give_up, f"/metrics never showed {what}"
        await asyncio.sleep(0.2)  # the figures are copied once a second
    return found


def _devices_ok(status: int, body: dict[str, Any]) -> bool:
    return status == 200 and body["checks"]["devices"]["status"] == "ok"


async def test_healthz_is_degraded_while_the_drive_is_silent(appliance: Appliance) -> None:
    await _health_until(appliance, _devices_ok, 30)
    appliance.fault("can", f"silence {DRIVE_SILENT_S}")
    found = await _health_until(
        appliance,
        lambda s, b: s == 200 and "drive1" in b["checks"]["devices"]["detail"],
        DRIVE_SILENT_S + 10,
    )
    assert found["status"] == "degraded"
    assert found["checks"]["devices"]["status"] == "degraded"
    assert found["checks"]["control_loop"]["status"] == "ok"
    await _health_until(appliance, _devices_ok, DRIVE_SILENT_S + 30)


async def test_metrics_show_an_e_stop_press_and_its_release(appliance: Appliance) -> None:
    estop_kind = (("kind", "estop"),)
    before = await _metrics_until(
        appliance, lambda m: "edgeloop_estop_pressed" in m, 30, "the e-stop family"
    )
    presses = before["edgeloop_estop_presses"][()]
    await appliance.press()
    try:
        pressed = await _metrics_until(
            appliance, lambda m: m["edgeloop_estop_pressed"][()] == 1, 30, "the e-stop pressed"
        )
        assert pressed["edgeloop_estop_presses"][()] == presses + 1
        assert pressed["edgeloop_safe_state"][estop_kind] == 1
    finally:
        await appliance.press(False)
    await _metrics_until(
        appliance, lambda m: m["edgeloop_estop_pressed"][()] == 0, 30, "the e-stop released"
    )
    assert (await appliance.reset()).accepted
    released = await _metrics_until(
        appliance, lambda m: m["edgeloop_safe_state"][estop_kind] == 0, 30, "the reset"
    )
    timed = released["edgeloop_system_runs"]
    assert timed[(("schedule", "FixedUpdate"), ("set", "SafetyInput"), ("system", "poll_estop"))]
    assert released["edgeloop_connections"], "the providers' connections, by provider"


async def test_trends_read_the_demo_data_log(appliance: Appliance) -> None:
    level = "tank1.TankLevel.level_m"
    give_up = time.monotonic() + 30
    while (
        level not in json.loads((await _get(appliance, "/api/fields", VIEWER_TOKEN))[1])["fields"]
    ):
        assert time.monotonic() < give_up, "the demo's data log never had the tank's level"
        await asyncio.sleep(0.2)
    assert (await _get(appliance, "/api/fields"))[0] == 401
    status, body = await _get(appliance, f"/api/trend?field={level}&points=50", VIEWER_TOKEN)
    assert status == 200
    found = json.loads(body)
    assert found["field"] == level
    assert 1 <= len(found["t"]) <= 50
    assert all(low <= high for low, high in zip(found["min"], found["max"], strict=True))


async def test_healthz_fails_while_edgeloop_ctl_is_stopped(appliance: Appliance) -> None:
    await _health_until(appliance, lambda s, b: b["checks"]["control_loop"]["status"] == "ok", 30)
    control = child_named(appliance.proc.pid, "edgeloop-ctl")
    os.kill(control, signal.SIGSTOP)
    try:
        # Failed within the supervisor's timeout, before it would exit for systemd.
        found = await _health_until(appliance, lambda s, b: s == 503, CONTROL_TIMEOUT_S)
        readyz = (await _get(appliance, "/readyz"))[0]
    finally:
        os.kill(control, signal.SIGCONT)
    assert found["status"] == "failed"
    assert "no tick for" in found["checks"]["control_loop"]["detail"]
    assert readyz == 503
    await _health_until(appliance, lambda s, b: s == 200, 30)
    assert appliance.proc.poll() is None, "the appliance runs on"
