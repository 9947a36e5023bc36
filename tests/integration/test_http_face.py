"""The HTTP paths of a running `edgeloop run`'s WebSocket port: /healthz turns degraded
when a device is offline and failed when the control loop stalls (SIGSTOP of
edgeloop-ctl); /readyz; /metrics parses with prometheus-client's own parser, carries the
families, and wants a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeloop.sim.ports import free_port
from tests.listening import WEBSOCKET, logged_port
from tests.process_tree import child_named

TOKEN = "viewer-token-0123456789"
SCRAPE = "scrape-token-0123456789"
CONTROL_TIMEOUT_S = 3.0  # the supervisor exits after it; /healthz fails at half


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    tmp_path = tmp_path_factory.mktemp("http")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
runtime: {{name: http, state_dir: {tmp_path}/state, control_timeout_s: {CONTROL_TIMEOUT_S}}}
network:
  tcp: null
  websocket: {{host: 127.0.0.1, port: 0}}
  tokens: [{{token: {TOKEN}, role: viewer}}]
  metrics_token: {SCRAPE}
tank_plant:
  tanks: [{{name: tank1}}]
data_log: {{flush_interval_s: 0.2}}
modbus:
  lines:
    - tcp: {{host: 127.0.0.1, port: {free_port()}}}
      timeout_s: 0.5
      devices:
        - name: plc1
          unit_id: 1
          poll_s: 0.1
          points:
            - {{entity: press1, component: Press, field: cycles, table: holding, address: 0}}
""")
    log = tmp_path / "appliance.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        yield logged_port(log, WEBSOCKET, proc), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(
    port: int, path: str, token: str | None = None, *, cookie: str | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie is not None:
        request.add_header("Cookie", f"edgeloop_token={cookie}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _until(port: int, path: str, wanted: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = _get(port, path)
        found = json.loads(body)
        if wanted(status, found):
            return found
        assert time.monotonic() < deadline, f"{path}: {status} {found}"
        time.sleep(0.1)


def test_healthz_is_degraded_while_a_device_is_offline(appliance: tuple[int, int]) -> None:
    port, _ = appliance
    found = _until(port, "/healthz", lambda s, b: s == 200 and b["status"] == "degraded")
    assert found["checks"]["devices"]["status"] == "degraded"
    assert "plc1" in found["checks"]["devices"]["detail"]
    assert found["checks"]["control_loop"]["status"] == "ok"
    ready = _until(port, "/readyz", lambda s, b: s == 200)
    assert ready["ready"] is True


def test_metrics_want_a_token_and_parse_with_the_families(appliance: tuple[int, int]) -> None:
    port, _ = appliance
    assert _get(port, "/metrics")[0] == 401
    assert _get(port, "/metrics", "not-a-token")[0] == 403
    assert _get(port, "/metrics", TOKEN)[0] == 200
    assert _get(port, "/metrics", cookie=TOKEN)[0] == 200
    families = _metrics_once_figures_are_in(port)
    for name in ("edgeloop_control_ticks", "edgeloop_control_overruns",
                 "edgeloop_control_skipped_ticks", "edgeloop_control_lateness_p99_seconds",
                 "edgeloop_control_lateness_seconds", "edgeloop_control_tick_work_seconds",
                 "edgeloop_set_runs", "edgeloop_set_run_seconds", "edgeloop_set_run_max_seconds",
                 "edgeloop_system_runs", "edgeloop_system_run_seconds",
                 "edgeloop_system_run_max_seconds", "edgeloop_safe_state", "edgeloop_alarms",
                 "edgeloop_device_state", "edgeloop_device_errors",
                 "edgeloop_process_cpu_seconds", "edgeloop_process_resident_memory_bytes",
                 "edgeloop_connections", "edgeloop_messages_received", "edgeloop_messages_sent",
                 "edgeloop_messages_dropped", "edgeloop_network_events"):  # fmt: skip
        assert name in families, name
    assert "edgeloop_estop_pressed" not in families, "no e-stop section: no e-stop family"
    lateness = families["edgeloop_control_lateness_seconds"]
    assert lateness.type == "histogram"
    buckets = [s.value for s in lateness.samples if s.name.endswith("_bucket")]
    count = next(s.value for s in lateness.samples if s.name.endswith("_count"))
    assert buckets == sorted(buckets) and buckets[-1] == count > 0
    simulate = [
        s for s in families["edgeloop_system_runs"].samples
        if s.labels == {"schedule": "FixedUpdate", "set": "SensorInput", "system": "simulate_tanks"}
    ]  # fmt: skip
    assert simulate and simulate[0].value > 0
    alarms = {s.labels["state"]: s.value for s in families["edgeloop_alarms"].samples}
    assert set(alarms) == {"active_unacked", "active_acked", "cleared_unacked", "normal"}
    assert alarms["active_unacked"] >= 1, "plc1's watchdog alarm"
    paths = {s.labels["path"] for s in families["edgeloop_messages_dropped"].samples}
    assert {"ws_output", "io_to_control", "control_to_io", "data_log"} <= paths
    assert families["edgeloop_data_log_samples_written"].samples[0].value > 0
    ticks = families["edgeloop_control_ticks"].samples[0].value
    assert ticks > 0
    processes = {s.labels["process"] for s in families["edgeloop_process_cpu_seconds"].samples}
    assert {"supervisor", "edgeloop-ctl", "edgeloop-io"} <= processes
    written = {
        s.labels["process"]: s.value for s in families["edgeloop_process_written_bytes"].samples
    }
    assert set(written) == processes
    offline = [
        s for s in families["edgeloop_device_state"].samples
        if s.labels == {"device": "plc1", "state": "online"}
    ]  # fmt: skip
    assert offline and offline[0].value == 0


def _metrics_once_figures_are_in(port: int) -> dict[str, Any]:
    """The families of /metrics once the control process has written its figures (once
    a second) with plc1's watchdog alarm (after its start grace of 5 s)."""
    deadline = time.monotonic() + 30
    while True:
        status, body = _get(port, "/metrics", SCRAPE)
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        alarms = {s.labels["state"]: s.value for s in families["edgeloop_alarms"].samples}
        if alarms.get("active_unacked"):
            return families
        assert time.monotonic() < deadline, f"no alarm in the figures: {alarms}"
        time.sleep(0.2)


def test_healthz_fails_while_the_control_loop_is_stopped(appliance: tuple[int, int]) -> None:
    port, supervisor = appliance
    _until(port, "/healthz", lambda s, b: b["checks"]["control_loop"]["status"] == "ok")
    control = child_named(supervisor, "edgeloop-ctl")
    os.kill(control, signal.SIGSTOP)
    try:
        # Polled from the stop on: failed within the supervisor's timeout, before it
        # would exit for systemd to restart the appliance.
        found = _until(port, "/healthz", lambda s, b: s == 503, timeout_s=CONTROL_TIMEOUT_S)
        readyz = _get(port, "/readyz")[0]
    finally:
        os.kill(control, signal.SIGCONT)
    assert found["status"] == "failed"
    assert "no tick for" in found["checks"]["control_loop"]["detail"]
    assert readyz == 503
    _until(port, "/healthz", lambda s, b: s == 200, timeout_s=30)


def _trend(port: int, query: str) -> dict[str, Any]:
    status, body = _get(port, f"/api/trend?{query}", cookie=TOKEN)
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def test_trends_read_what_the_appliance_logs_decimated(appliance: tuple[int, int]) -> None:
    port, _ = appliance
    level = "tank1.TankLevel.level_m"
    assert _get(port, "/api/fields")[0] == 401
    assert _get(port, "/api/fields", SCRAPE)[0] == 403, "the scrape token opens /metrics only"
    deadline = time.monotonic() + 30
    while level not in json.loads(_get(port, "/api/fields", cookie=TOKEN)[1])["fields"]:
        assert time.monotonic() < deadline, "the data log never had the tank's level"
        time.sleep(0.1)
    since = time.time() - 60  # buckets of 15 s at 4 points: read from raw
    # Enough logged (100 Hz, committed every 0.2 s); the window then ends at the last
    # sample seen, so both reads below see the same committed samples.
    while len((full := _trend(port, f"field={level}&since={since}&points=10000"))["t"]) < 200:
        assert time.monotonic() < deadline, f"too few samples logged: {len(full['t'])}"
        time.sleep(0.1)
    window = f"field={level}&since={since}&until={full['t'][-1] + 1e-3}"
    full = _trend(port, f"{window}&points=10000")
    decimated = _trend(port, f"{window}&points=4")
    assert (full["resolution"], decimated["resolution"]) == ("raw", "raw")
    assert 1 <= len(decimated["t"]) <= 4 < len(full["t"])
    assert min(decimated["min"]) == min(full["min"])
    assert max(decimated["max"]) == max(full["max"])
    for low, mean, high in zip(decimated["min"], decimated["mean"], decimated["max"], strict=True):
        assert low <= mean <= high
    status, body = _get(port, f"/api/trend?field={level}&since=20&until=10", TOKEN)
    assert status == 400
    assert "since (20) must be before until (10)" in json.loads(body)["error"]
    assert _get(port, "/api/trend?field=no.Such.field", TOKEN)[0] == 400
    assert _get(port, "/no/such/path")[0] == 401, "a token first, whatever the path"
    assert _get(port, "/no/such/path", cookie=TOKEN)[0] == 404
