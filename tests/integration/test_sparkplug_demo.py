"""The demo as an `edgeloop run` with its devices, publishing to a real Mosquitto as a
Sparkplug B edge node (config/demo-sparkplug.yaml, what `edgeloop demo --sparkplug`
adds), and a host's DCMD going through the appliance's command checks and audit log."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from edgeloop.config import load_config
from edgeloop.demo_config import place_demo_config, sparkplug_section
from edgeloop.uplink.sparkplug_b_pb2 import Payload
from tests.mqtt_broker import Mosquitto
from tests.running_appliance import running_appliance, until
from tests.sparkplug_host import Host, metric_named, quality_of

GROUP, NODE = "edgeloop-demo", "demo"
BEACON = "cell1.Beacon.lit"


def test_edgeloop_demo_sparkplug_adds_the_section_on_that_broker(tmp_path: Path) -> None:
    with as_file(files("edgeloop.examples") / "demo.yaml") as source:
        path = place_demo_config(source, tmp_path, None, sparkplug=("127.0.0.1", 18830))
    section = load_config(path).sections["sparkplug"]
    assert section.model_dump()["broker"]["port"] == 18830  # type: ignore[index]


def _with_sparkplug(port: int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        section = sparkplug_section("127.0.0.1", port)
        section["primary_host_id"] = "scada"
        # the host may write tank1's setpoint and the beacon (a GPIO output the safe
        # state holds): the Modbus server's points then may not (one writer per field)
        tank1 = next(d for d in section["devices"] if d["id"] == "tank1")
        setpoint = next(m for m in tank1["metrics"] if m["name"] == "setpoint_m")
        setpoint.update(writable=True, min=0.0, max=2.0)
        beacon = {"name": "lit", "field": BEACON, "type": "boolean", "writable": True}
        section["devices"].append({"id": "cell1", "metrics": [beacon]})
        for point in data["modbus_server"]["points"]:
            if (point["entity"], point["component"]) in (("tank1", "Pid"), ("cell1", "Beacon")):
                point["writable"] = False
                point.pop("min", None), point.pop("max", None)
        data["sparkplug"] = section

    return edit


def _setpoints(host: Host) -> list[float]:
    values = [metric_named(b.payload, "setpoint_m").double_value for b in host.of("DBIRTH")
              if b.device == "tank1"]  # fmt: skip
    alias = metric_named(next(b for b in host.of("DBIRTH") if b.device == "tank1").payload,
                         "setpoint_m").alias  # fmt: skip
    return values + [v for _, v, _ in host.data(alias)]


async def test_while_e_stopped_a_dcmd_to_a_held_output_is_refused_and_one_to_a_setpoint_applied(
    tmp_path: Path,
) -> None:
    """[tck-id-operational-behavior-data-commands-dcmd-verb]: a host's DCMD to a
    writable metric is a command like any other, under the one policy for writes from
    outside (docs/safety.md): while the e-stop holds the beacon (a GPIO output with a
    safe value) a write to it is refused, one to a setpoint (which drives nothing
    while the outputs are held) applied; after the reset the beacon's is applied too.
    Each in the audit log with who sent it."""
    with Mosquitto(tmp_path / "broker") as broker:
        async with (
            Host(broker.port, group=GROUP, node=NODE) as host,
            running_appliance(tmp_path / "run", _with_sparkplug(broker.port)) as appliance,
        ):
            await until(lambda: any(b.device == "tank1" for b in host.of("DBIRTH")),
                        30, "tank1's DBIRTH")  # fmt: skip
            level = metric_named(host.of("DBIRTH")[0].payload, "level_m")
            assert level.datatype == 10
            await until(lambda: host.data(level.alias), 30, "tank1's level changing")

            def setpoint(value: float) -> Payload.Metric:
                return Payload.Metric(name="setpoint_m", datatype=10, double_value=value)

            lit = Payload.Metric(name="lit", datatype=11, boolean_value=True)
            await appliance.press()
            await until(lambda: _audited(appliance, "estop"), 30, "the e-stop audited")
            await host.command("DCMD", "cell1", [lit])
            await host.command("DCMD", "tank1", [setpoint(0.9)])
            await until(lambda: len(_writes(appliance)) == 2, 30, "both writes audited")
            await until(lambda: _setpoints(host)[-1:] == [0.9], 30, "the setpoint published")
            await appliance.press(False)
            result = await appliance.reset()
            assert result.accepted, result.reason
            await host.command("DCMD", "cell1", [lit])
            await until(lambda: len(_writes(appliance)) == 3, 30, "the beacon's write audited")
    refused, taken, applied = _writes(appliance)
    assert BEACON in refused["what"] and BEACON in applied["what"]
    assert (refused["accepted"], taken["accepted"], applied["accepted"]) == (False, True, True)
    assert refused["reason"].startswith("the safe state holds it: estop")
    assert refused["by"].startswith("sparkplug host scada")


def _writes(appliance: Any) -> list[dict[str, Any]]:
    return [e for e in appliance.audit_entries() if "sparkplug write" in str(e.get("what"))]


def _audited(appliance: Any, cause: str) -> bool:
    return any(e.get("cause") == cause for e in appliance.audit_entries())


def _press_pressure_at_node_level(port: int) -> Any:
    """The demo's section, with press1's pressure a metric of the edge node (which never
    dies), so its quality is seen on the wire while press1 itself is dead."""

    def edit(data: dict[str, Any]) -> None:
        section = sparkplug_section("127.0.0.1", port)
        press1 = next(d for d in section["devices"] if d["id"] == "press1")
        pressure = next(m for m in press1["metrics"] if m["name"] == "pressure_bar")
        press1["metrics"].remove(pressure)
        section["metrics"].append({**pressure, "name": "press1/pressure_bar"})
        data["sparkplug"] = section

    return edit


def _press1(host: Host) -> list[str]:
    return [r.verb for r in host.of("DBIRTH", "DDEATH", "DDATA") if r.device == "press1"]


def _pressure_qualities(host: Host) -> list[int | None]:
    nbirth = host.of("NBIRTH")[0].payload
    alias = metric_named(nbirth, "press1/pressure_bar").alias
    return [
        quality_of(metric_named(b.payload, "press1/pressure_bar")) for b in host.of("NBIRTH")
    ] + [quality_of(m) for r in host.of("NDATA") for m in r.payload.metrics if m.alias == alias]


async def test_a_stopped_plc_makes_its_metrics_stale_and_its_device_dead_until_it_is_back(
    tmp_path: Path,
) -> None:
    """The demo's PLC (a real Modbus TCP simulator) stopped: its pressure's Quality goes
    to 500 (stale) on the wire and press1 (``health: plc1``) gets a DDEATH
    ([tck-id-operational-behavior-device-ddeath]); started again: a DBIRTH before any
    DDATA of press1, and the pressure good (192) again."""
    with Mosquitto(tmp_path / "broker") as broker:
        async with (
            Host(broker.port, group=GROUP, node=NODE) as host,
            running_appliance(
                tmp_path / "run", _press_pressure_at_node_level(broker.port)
            ) as appliance,
        ):
            # up: press1 in data (past its births and the start's connecting), pressure good
            await until(lambda: _press1(host)[-1:] == ["DDATA"], 30, "press1's data")
            await until(lambda: _pressure_qualities(host)[-1:] == [192], 30, "the pressure good")
            before, qualities_before = len(_press1(host)), len(_pressure_qualities(host))
            await appliance.stop_plc()
            await until(lambda: "DDEATH" in _press1(host)[before:], 30, "press1's DDEATH")
            await until(lambda: 500 in _pressure_qualities(host)[qualities_before:], 30, "stale")
            dead_at = len(_press1(host))
            await appliance.start_plc()
            await until(lambda: len(_press1(host)) > dead_at, 30, "press1 heard of again")
            await until(lambda: _pressure_qualities(host)[-1:] == [192], 30, "good again")
    stopped = _press1(host)[before:dead_at]
    assert stopped[stopped.index("DDEATH") :] == ["DDEATH"], f"no data while dead: {stopped}"
    after = _press1(host)[dead_at:]
    assert after[0] == "DBIRTH", f"a DBIRTH before its data: {after}"
    assert "DDEATH" not in after
    reborn = [r for r in host.of("DBIRTH") if r.device == "press1"][-1]
    assert metric_named(reborn.payload, "cycles").datatype == 4
