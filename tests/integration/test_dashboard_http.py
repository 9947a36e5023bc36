"""The dashboard's HTTP paths on a running `edgeloop run`'s WebSocket port: the page and
its files for anyone (and nothing from elsewhere), the /api/ paths for a person's token
only (cookie or header), the loop's figures, the data log's fields and trends; the loop
and the audit log pushed over /ws."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from edgeloop.net import protocol
from edgeloop.net.registry import info
from edgeloop.safety.estop import Reset
from tests.listening import WEBSOCKET, logged_port

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
DEVICE = "device-token-0123456789"
DEADLINE_S = 30.0
LEVEL = "tank1.TankLevel.level_m"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("dashboard")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
runtime: {{name: dash, state_dir: {tmp_path}/state}}
network:
  tcp: null
  websocket: {{host: 127.0.0.1, port: 0}}
  tokens:
    - {{token: {VIEWER}, role: viewer}}
    - {{token: {OPERATOR}, role: operator}}
    - {{token: {DEVICE}, role: device}}
tank_plant:
  tanks: [{{name: tank1}}]
data_log: {{}}
estop:  # for an audited command (safety.Reset)
  inputs: [{{chip: sim, offset: 0}}]
""")
    log = tmp_path / "appliance.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        yield logged_port(log, WEBSOCKET, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _api(port: int, path: str, token: str = VIEWER) -> tuple[int, Any]:
    status, _, body = _get(port, path, Authorization=f"Bearer {token}")
    return status, json.loads(body)


def test_the_page_and_every_file_it_loads_come_from_the_appliance(port: int) -> None:
    status, headers, body = _get(port, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/dashboard.js" in loaded and "/static/uPlot.iife.min.js" in loaded
    for path in loaded:
        assert path.startswith("/static/"), f"{path}: not from the appliance"
        assert _get(port, path)[0] == 200, path


def test_a_path_outside_the_static_files_is_not_found(port: int) -> None:
    for path in ("/static/../pyproject.toml", "/static/missing.js", "/static/"):
        assert _get(port, path)[0] == 404, path
    # Outside the page's files: a token first (the one gate of every HTTP path), then 404.
    assert _get(port, "/nope")[0] == 401
    assert _get(port, "/nope", Authorization=f"Bearer {VIEWER}")[0] == 404


def test_the_api_wants_a_persons_token_from_a_cookie_or_a_header(port: int) -> None:
    assert _get(port, "/api/session")[0] == 401  # none: who are you
    assert _api(port, "/api/session", DEVICE)[0] == 403  # a robot's token, not a person's
    assert _api(port, "/api/session", "not-a-token")[0] == 403  # not one of ours
    status, _, body = _get(port, "/api/session", Cookie=f"edgeloop_token={OPERATOR}")
    assert (status, json.loads(body)) == (200, {"role": "operator"})
    assert _api(port, "/api/session") == (200, {"role": "viewer"})


def test_the_loop_figures_move_with_the_loop(port: int) -> None:
    _, first = _api(port, "/api/loop")
    until = time.monotonic() + DEADLINE_S
    while True:
        _, loop = _api(port, "/api/loop")
        histogram = loop["lateness_histogram"]
        if loop["ticks"] > first["ticks"] and loop["rate_hz"] > 0 and sum(histogram["ticks"]):
            break
        assert time.monotonic() < until, loop
        time.sleep(0.1)  # polling the appliance; the deadline bounds the wait
    assert {"lateness_p99_us", "overruns", "last_tick_age_s", "safe_state"} <= loop.keys()
    assert loop["safe_state"] is False
    # a bucket per edge and one past the last; the figures are written once a second
    assert len(histogram["ticks"]) == len(histogram["edges_us"]) + 1
    assert 0 < sum(histogram["ticks"]) <= loop["ticks"]


def test_a_trend_of_a_logged_field_has_at_most_the_points_asked(port: int) -> None:
    until = time.monotonic() + DEADLINE_S
    while LEVEL not in _api(port, "/api/fields")[1]["fields"]:
        assert time.monotonic() < until, "the level never reached the data log"
        time.sleep(0.2)  # the data log flushes once a second
    span = f"field={LEVEL}&since={time.time() - 600}&until={time.time() + 60}"
    while True:
        status, trend = _api(port, f"/api/trend?{span}&points=1000")
        if status == 200 and len(trend["t"]) >= 2:
            break
        assert time.monotonic() < until, trend
        time.sleep(0.2)
    assert trend["field"] == LEVEL and trend["resolution"] == "raw"
    status, fewer = _api(port, f"/api/trend?{span}&points=1")
    assert status == 200 and len(fewer["t"]) == 1
    for answer in (trend, fewer):
        assert len(answer["t"]) == len(answer["min"]) == len(answer["max"]) == len(answer["mean"])
        for low, mean, high in zip(answer["min"], answer["mean"], answer["max"], strict=True):
            assert low <= mean <= high
    # asked later, the one bucket holds every point the first answer had, and maybe more
    assert fewer["min"][0] <= min(trend["min"]) and fewer["max"][0] >= max(trend["max"])


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("field=nope.A.b&since=0&until=1&points=10", "unknown field"),
        (f"field={LEVEL}&since=10&until=1&points=10", "must be before until"),
        (f"field={LEVEL}&since=0&until=1&points=0", "points"),
        (f"field={LEVEL}&since=x&until=1&points=10", "not a time in unix seconds"),
    ],
)
def test_a_bad_trend_query_is_refused_with_its_reason(port: int, query: str, reason: str) -> None:
    status, body = _api(port, f"/api/trend?{query}")
    assert status == 400
    assert reason in body["error"]


def test_the_loop_and_the_audit_log_are_pushed_over_the_websocket(port: int) -> None:
    asyncio.run(_loop_and_audit_topics(port))


async def _hello(port: int, token: str, role: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/ws")
    hello = info(protocol.Hello)
    payload = {"client_id": f"dash-{role}", "token": token, "role": role, "protocol_version": 1}
    await ws.send(json.dumps([hello.name, f"{hello.schema_hash:016x}", payload]))
    assert (await _receive(ws))[0] == "edgeloop.Welcome"
    return ws


async def _send(ws: ClientConnection, msg: object) -> None:
    found = info(type(msg))
    await ws.send(protocol.encode_json_parts(found.name, found.schema_hash, msg))


async def _receive(ws: ClientConnection) -> tuple[str, Any]:
    name, _, payload = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
    return name, payload


async def _next(ws: ClientConnection, name: str) -> Any:
    async with asyncio.timeout(DEADLINE_S):
        while True:
            got, payload = await _receive(ws)
            if got == name:
                return payload


async def _loop_and_audit_topics(port: int) -> None:
    operator = await _hello(port, OPERATOR, "operator")
    device = await _hello(port, DEVICE, "device")
    try:
        await _send(operator, protocol.Subscribe("loop"))
        first = await _next(operator, "edgeloop.LoopStatus")
        second = await _next(operator, "edgeloop.LoopStatus")  # a second later
        assert second["ticks"] > first["ticks"]
        assert len(second["lateness_histogram"]["ticks"]) == (
            len(second["lateness_histogram"]["edges_us"]) + 1
        )
        await _send(operator, protocol.Subscribe("audit"))
        tail = await _next(operator, "edgeloop.AuditTail")  # at once: what the log holds
        seen = {entry["seq"] for entry in tail["entries"]}
        await _send(operator, Reset())  # nothing is latched: accepted, and audited
        while True:  # the next tail once the log has grown (the loop's keep coming)
            entries = (await _next(operator, "edgeloop.AuditTail"))["entries"]
            new = [e for e in entries if e["seq"] not in seen]
            if any(e["event"] == "safety.reset" for e in new):
                break
            seen |= {e["seq"] for e in entries}
        assert all("hash" not in e and "prev" not in e for e in entries), "no chain fields"
        await _send(device, protocol.Subscribe("audit"))
        assert await _next(device, "edgeloop.Error") == {
            "code": "forbidden",
            "detail": "the audit topic is for people",
        }
    finally:
        await operator.close()
        await device.close()
