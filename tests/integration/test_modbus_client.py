"""The Modbus client against the simulated PLC (pymodbus's server) over TCP and RTU on a pty:
values into the World, outputs back to the PLC, faults through health, and a dead device
on a shared line not slowing the healthy one."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.config import ConfigError, load_config
from edgeloop.drivers.modbus.codec import encode
from edgeloop.drivers.modbus.config import ModbusConfig, RtuLine
from edgeloop.drivers.modbus.plugin import SECTION
from edgeloop.drivers.modbus.sim import Faults, PlcSimulator
from edgeloop.drivers.points import Quality
from edgeloop.sim.ports import free_port
from tests.field_harness import Field, running_field

DEADLINE_S = 15.0  # generous: other test runs share this machine
FAST_FAULTS = {"timeout_s": 0.2, "retries": 0, "backoff": {"initial_s": 0.1, "max_s": 0.4}}


@pytest.fixture
async def plc() -> AsyncIterator[PlcSimulator]:
    simulator = PlcSimulator(unit_ids=(1, 2), size=200)
    yield simulator
    await simulator.stop()


def _point(field: str, address: int, **more: Any) -> dict[str, Any]:
    return {"entity": "tank1", "component": "Tank", "field": field, "address": address, **more}


def _config(line: dict[str, Any], *devices: dict[str, Any], **settings: Any) -> ModbusConfig:
    return ModbusConfig.model_validate({"lines": [{**line, **settings, "devices": list(devices)}]})


# Every type, with each byte/word order somewhere, and what the PLC holds for it.
TYPED_POINTS: list[tuple[dict[str, Any], Any]] = [
    (_point("i16", 0, type="int16"), -1234),
    (_point("u16", 1, type="uint16"), 65000),
    (_point("i32", 2, type="int32", word_order="little"), -70000),
    (_point("u32", 4, type="uint32", byte_order="little", word_order="little"), 4_000_000_000),
    (_point("f32", 6, type="float32", byte_order="little"), -2.5),
    (_point("f64", 8, type="float64", word_order="little"), 1e100),
    (_point("flag", 12, type="bool"), True),
    (_point("label", 13, type="string", count=3), "PUMP1"),
    (_point("i64", 16, type="int64"), -(1 << 40)),
    (_point("u64", 20, type="uint64", byte_order="little"), 1 << 60),
    (_point("scaled", 24, type="int16", scale=0.1, offset=-5.0), 321),
]


def _load_typed_points(plc: PlcSimulator, unit: int = 1) -> None:
    for point, raw in TYPED_POINTS:
        registers = encode(
            point["type"], raw, point.get("byte_order", "big"), point.get("word_order", "big"),
            point.get("count"),
        )  # fmt: skip
        plc.write(unit, "holding", point["address"], registers)
    plc.write(unit, "input", 50, encode("float32", 0.75))
    plc.write(unit, "coil", 5, [True])
    plc.write(unit, "discrete", 7, [True])


def _typed_device(**more: Any) -> dict[str, Any]:
    points = [point for point, _ in TYPED_POINTS] + [
        _point("inflow", 50, table="input"),
        _point("running", 5, table="coil"),
        _point("alarm", 7, table="discrete"),
    ]
    return {"name": "plc1", "unit_id": 1, "poll_s": 0.05, "points": points, **more}


def _expected(raw: Any, point: dict[str, Any]) -> Any:
    if point["type"] in ("bool", "string"):
        return raw
    return raw * point.get("scale", 1.0) + point.get("offset", 0.0)


def _all_typed_values_arrived(f: Field) -> bool:
    tank = f.component("tank1", "Tank")
    for point, raw in TYPED_POINTS:
        value = getattr(tank, point["field"])
        if getattr(tank, f"{point['field']}_quality") is not Quality.GOOD:
            return False
        if (
            not math.isclose(value, _expected(raw, point))
            if point["type"] != "string"
            else (value != raw)
        ):
            return False
    return (tank.inflow, tank.running, tank.alarm) == (0.75, True, True)


@pytest.mark.parametrize("max_outstanding", [1, 4])
async def test_every_type_reaches_the_world_over_tcp(
    plc: PlcSimulator, max_outstanding: int
) -> None:
    _load_typed_points(plc)
    plc.pipelined = max_outstanding > 1
    port = await plc.serve_tcp()
    device = _typed_device(max_outstanding=max_outstanding)
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device)
    async with running_field(SECTION, config) as field:
        await field.until(_all_typed_values_arrived, DEADLINE_S, "every typed value, GOOD")
        health = field.health("plc1")
        assert health.state == "online"
        # registers 0..24 in one read, then input, coil and discrete: one each
        assert health.requests_per_cycle == 4
        assert isinstance(field.component("tank1", "Tank").i16, float)


async def test_every_type_reaches_the_world_over_rtu(plc: PlcSimulator) -> None:
    _load_typed_points(plc, unit=2)
    path = await plc.serve_rtu()
    config = _config({"rtu": {"port": path, "baudrate": 115200}}, _typed_device(unit_id=2))
    async with running_field(SECTION, config) as field:
        await field.until(_all_typed_values_arrived, DEADLINE_S, "every typed value over RTU")
        assert field.health("plc1").state == "online"


def _output_device(**more: Any) -> dict[str, Any]:
    points = [
        _point("setpoint", 30, type="float32", direction="output", word_order="little"),
        _point("speed", 32, type="uint16", direction="both", scale=0.5),
        _point("pump", 9, table="coil", direction="output"),
        _point("valve", 10, table="coil", direction="output"),  # next to pump: one FC15
        _point("mode", 33, type="uint16", direction="output"),  # next to speed: one FC16
    ]
    return {"name": "plc1", "unit_id": 1, "poll_s": 0.05, "points": points, **more}


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_outputs_are_written_when_the_control_changes_them(
    plc: PlcSimulator, transport: str
) -> None:
    if transport == "tcp":
        line: dict[str, Any] = {"tcp": {"host": "127.0.0.1", "port": await plc.serve_tcp()}}
    else:
        line = {"rtu": {"port": await plc.serve_rtu(), "baudrate": 115200}}
    config = _config(line, _output_device(verify_writes=True))
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: f.health("plc1").state == "online", DEADLINE_S, "online")
        # output-only points are written at start with the component's value
        await field.until(lambda f: plc.read(1, "holding", 30, 2) == [0, 0], DEADLINE_S)
        tank = field.component("tank1", "Tank")
        tank.setpoint = 12.5
        tank.pump = True
        tank.valve = True
        tank.speed = 100.0
        tank.mode = 3.0

        def written(f: Field) -> bool:
            registers = [*encode("float32", 12.5, "big", "little"), 200, 3]
            coils = [True, True]
            return plc.read(1, "holding", 30, 4) == registers and plc.read(1, "coil", 9, 2) == coils

        await field.until(written, DEADLINE_S, "every changed output on the PLC")
        # a poll that ends after this started after the write and its read-back
        device = field.part.devices["plc1"]
        reads = device.good_reads
        await field.until(lambda f: device.good_reads > reads, DEADLINE_S, "a poll after it")
        assert device.channel.health.errors.get("write", 0) == 0, device.channel.health.last_error

        plc.write(1, "holding", 32, [50])  # someone else changes it: read back as 25.0
        await field.until(lambda f: f.component("tank1", "Tank").speed == 25.0, DEADLINE_S)

        tank.mode = 70000.0  # does not fit a uint16: refused, reported
        tank.speed = 10.0  # in the same request: written all the same
        await field.until(lambda f: f.health("plc1").error_count("write") == 1, DEADLINE_S)
        assert "mode" in field.health("plc1").last_error
        await field.until(lambda f: plc.read(1, "holding", 32, 2) == [20, 3], DEADLINE_S)


async def test_a_refused_write_is_a_write_error(plc: PlcSimulator) -> None:
    port = await plc.serve_tcp()
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, _output_device())
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: f.health("plc1").state == "online", DEADLINE_S, "online")
        plc.set_fault(1, Faults(exception_code=4))
        field.component("tank1", "Tank").setpoint = 1.0
        await field.until(lambda f: f.health("plc1").error_count("write") >= 1, DEADLINE_S)
        assert "code 4" in field.health("plc1").last_error


async def test_an_output_changed_every_tick_leaves_the_polls_their_turn(
    plc: PlcSimulator,
) -> None:
    poll_s, window_s = 0.05, 2.0
    port = await plc.serve_tcp()
    line = {"tcp": {"host": "127.0.0.1", "port": port, "shared_connection": True}}
    writer = {
        "name": "unit1",
        "unit_id": 1,
        "poll_s": poll_s,
        "points": [_point("level", 0), _point("setpoint", 30, direction="output")],
    }
    reader = {"name": "unit2", "unit_id": 2, "poll_s": poll_s, "points": [_tank2_level(0)]}
    plc.set_fault(1, Faults(delay_s=0.03))  # a write to unit1 takes 3 control ticks
    async with running_field(SECTION, _config(line, writer, reader)) as field:
        await field.until(
            lambda f: f.health("unit1").state == f.health("unit2").state == "online",
            DEADLINE_S,
            "both online",
        )
        devices = field.part.devices
        reads = {name: device.good_reads for name, device in devices.items()}
        tank = field.component("tank1", "Tank")
        start = time.monotonic()

        def change_every_tick(f: Field) -> bool:
            tank.setpoint += 1.0  # a PID output: a new value every tick
            return time.monotonic() - start >= window_s

        await field.until(change_every_tick, DEADLINE_S, "window")
        elapsed = time.monotonic() - start
        rates = {name: (devices[name].good_reads - reads[name]) / elapsed for name in reads}
        # Writes served before every poll read each unit 0.3-0.6 times a second.
        assert rates["unit2"] >= 0.4 / poll_s, rates
        assert rates["unit1"] >= 0.2 / poll_s, rates
        latest = encode("float32", tank.setpoint)
        await field.until(
            lambda f: plc.read(1, "holding", 30, 2) == latest, DEADLINE_S, "the latest setpoint"
        )


def _tank2_level(address: int, **more: Any) -> dict[str, Any]:
    return {**_point("level", address), "entity": "tank2", **more}


async def test_a_poll_overdue_turns_its_values_stale_while_the_device_answers(
    plc: PlcSimulator,
) -> None:
    port = await plc.serve_tcp()
    line = {"tcp": {"host": "127.0.0.1", "port": port, "shared_connection": True}}
    fast = {"name": "unit1", "unit_id": 1, "poll_s": 0.05, "points": [_point("level", 0)]}
    # eight requests a poll (the points are not adjacent): slowed down, 2.4 s of the line
    slow = {
        "name": "unit2",
        "unit_id": 2,
        "poll_s": 0.05,
        "points": [_tank2_level(10 * i, field=f"level{i}") for i in range(8)],
    }
    config = _config(line, fast, slow, timeout_s=1.0, retries=0)
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "a good read")
        plc.set_fault(2, Faults(delay_s=0.3))
        await field.until(
            lambda f: _quality(f) is Quality.STALE,
            DEADLINE_S,
            "unit1 STALE: not read within 2 x 0.05 s + 1 s while the line waits for unit2",
        )
        health = field.health("unit1")
        assert health.state == "online" and health.errors == (), health
        plc.clear_faults()
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "fresh again")


async def test_outputs_are_written_again_when_a_device_comes_back_online(
    plc: PlcSimulator,
) -> None:
    port = await plc.serve_tcp()
    device = {
        "name": "plc1",
        "poll_s": 0.05,
        "points": [_point("level", 0), _point("setpoint", 30, direction="output")],
    }
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device, **FAST_FAULTS)
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: f.health("plc1").state == "online", DEADLINE_S, "online")
        field.component("tank1", "Tank").setpoint = 12.5
        setpoint = encode("float32", 12.5)
        await field.until(lambda f: plc.read(1, "holding", 30, 2) == setpoint, DEADLINE_S)

        plc.set_fault(1, Faults(disconnect=True))  # the PLC reboots...
        await field.until(lambda f: f.health("plc1").state == "offline", DEADLINE_S, "offline")
        plc.write(1, "holding", 30, [0, 0])  # ... to its defaults
        plc.clear_faults()
        await field.until(
            lambda f: plc.read(1, "holding", 30, 2) == setpoint,
            DEADLINE_S,
            "the setpoint written again, unchanged by the control",
        )


def _output_only_device(**more: Any) -> dict[str, Any]:
    points = [_point("setpoint", 30, direction="output")]
    return {"name": "plc1", "points": points, **more}


async def test_a_good_write_resets_the_backoff_of_an_output_only_device(
    plc: PlcSimulator,
) -> None:
    port = await plc.serve_tcp()
    line = {"tcp": {"host": "127.0.0.1", "port": port}}
    async with running_field(SECTION, _config(line, _output_only_device(), **FAST_FAULTS)) as field:
        device = field.part.devices["plc1"]
        plc.set_fault(1, Faults(timeout=True))
        field.component("tank1", "Tank").setpoint = 5.0
        await field.until(lambda f: device.backoff.attempts >= 2, DEADLINE_S, "writes failing")
        plc.clear_faults()
        await field.until(lambda f: f.health("plc1").state == "online", DEADLINE_S, "written")
        assert plc.read(1, "holding", 30, 2) == encode("float32", 5.0)
        assert device.backoff.attempts == 0, "the next failure backs off from the start"


async def test_a_read_back_without_answer_is_a_write_error_and_the_write_is_not_resent(
    plc: PlcSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = 0

    def every_second_request_unanswered(unit_id: int) -> Faults:
        # an output-only device sends a write, then its read-back: the read-backs time out
        nonlocal requests
        requests += 1
        return Faults(timeout=requests % 2 == 0)

    monkeypatch.setattr(plc, "faults_for", every_second_request_unanswered)
    port = await plc.serve_tcp()
    line = {"tcp": {"host": "127.0.0.1", "port": port}}
    device_config = _output_only_device(verify_writes=True)
    async with running_field(SECTION, _config(line, device_config, **FAST_FAULTS)) as field:
        device = field.part.devices["plc1"]
        field.component("tank1", "Tank").setpoint = 7.5
        await field.until(
            lambda f: plc.read(1, "holding", 30, 2) == encode("float32", 7.5), DEADLINE_S
        )
        await field.until(
            lambda f: requests % 2 == 0 and f.health("plc1").error_count("write") == requests // 2,
            DEADLINE_S,
            "a write error for the read-back of the last write",
        )
        assert "read-back of holding 30+2: timeout" in field.health("plc1").last_error
        assert device.pending == {}, "an accepted write is not sent again"
        assert device.backoff.attempts == 0, "a device that accepted a write is not backed off"


def _quality(f: Field) -> Quality:
    quality: Quality = f.component("tank1", "Tank").level_quality
    return quality


@pytest.mark.parametrize(
    ("fault", "kind", "state", "quality"),
    [
        (Faults(timeout=True), "timeout", "offline", Quality.STALE),
        (Faults(garbage=True), "garbage", "offline", Quality.STALE),
        (Faults(disconnect=True), "disconnect", "offline", Quality.STALE),
        (Faults(exception_code=2), "exception", "offline", Quality.BAD),
    ],
)
@pytest.mark.parametrize("max_outstanding", [1, 4])
async def test_a_fault_moves_health_and_quality_and_the_device_recovers(
    plc: PlcSimulator,
    fault: Faults,
    kind: str,
    state: str,
    quality: Quality,
    *,
    max_outstanding: int,
) -> None:
    plc.write(1, "holding", 0, encode("float32", 1.5))
    plc.pipelined = max_outstanding > 1
    port = await plc.serve_tcp()
    # other blocks of the same poll on the wire with the one that fails
    spread = [_point(f"other{i}", 20 * i) for i in range(1, 4)]
    device = {
        "name": "plc1",
        "poll_s": 0.05,
        "max_outstanding": max_outstanding,
        "points": [_point("level", 0), *spread],
    }
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device, **FAST_FAULTS)
    async with running_field(SECTION, config) as field:
        assert field.health("plc1").state == "connecting"
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "a good read")
        assert field.health("plc1").state == "online"

        plc.set_fault(1, fault)
        await field.until(
            lambda f: f.health("plc1").state == state and _quality(f) is quality,
            DEADLINE_S,
            f"{state} with {quality.name} values after {kind}",
        )
        assert field.health("plc1").error_count(kind) >= 1, field.health("plc1").errors
        assert field.component("tank1", "Tank").level == 1.5, "the last value is kept"

        plc.clear_faults()
        plc.write(1, "holding", 0, encode("float32", 2.5))
        await field.until(
            lambda f: (
                f.health("plc1").state == "online"
                and _quality(f) is Quality.GOOD
                and f.component("tank1", "Tank").level == 2.5
            ),
            DEADLINE_S,
            "online again with fresh values",
        )


async def test_errors_below_offline_after_leave_the_device_degraded_with_stale_values(
    plc: PlcSimulator,
) -> None:
    port = await plc.serve_tcp()
    device = {"name": "plc1", "poll_s": 0.05, "points": [_point("level", 0)]}
    line = {"tcp": {"host": "127.0.0.1", "port": port}}
    config = _config(line, device, **FAST_FAULTS, offline_after=1000)
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "a good read")
        plc.set_fault(1, Faults(timeout=True))
        await field.until(
            lambda f: f.health("plc1").state == "degraded" and _quality(f) is Quality.STALE,
            DEADLINE_S,
            "degraded, values stale: a value not read on time is not presented as fresh",
        )
        plc.clear_faults()
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "fresh again")
        assert field.health("plc1").state == "online"


async def test_rtu_requests_keep_the_inter_request_delay(plc: PlcSimulator) -> None:
    path = await plc.serve_rtu()
    device = {"name": "plc1", "poll_s": 0.001, "points": [_point("level", 0)]}
    line = {"rtu": {"port": path, "baudrate": 115200, "inter_request_delay_s": 0.05}}
    async with running_field(SECTION, _config(line, device)) as field:
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "a good read")
        part = field.part.devices["plc1"]
        reads, start = part.good_reads, time.monotonic()
        await field.until(lambda f: time.monotonic() - start >= 1.5, DEADLINE_S, "window")
        rate = (part.good_reads - reads) / (time.monotonic() - start)
        assert 5 <= rate <= 21, f"{rate:.1f} reads/s with 50 ms between requests"


def test_rtu_gap_is_three_and_a_half_characters_or_the_configured_delay() -> None:
    def gap(**rtu: Any) -> float:
        return RtuLine.model_validate({"port": "/dev/ttyUSB0", **rtu}).gap_s()

    assert gap(baudrate=9600) == pytest.approx(3.5 * 10 / 9600)  # 8N1: 10 bits a character
    assert gap(baudrate=9600, parity="E", stopbits=2) == pytest.approx(3.5 * 12 / 9600)
    assert gap(baudrate=115200) == pytest.approx(0.00175)  # fixed above 19200 baud
    assert gap(baudrate=115200, inter_request_delay_s=0.02) == 0.02


def _spread_device(blocks: int, **more: Any) -> dict[str, Any]:
    """A device whose poll takes ``blocks`` read requests (points 20 registers apart)."""
    points = [_point(f"level{i}", 20 * i, type="uint16") for i in range(blocks)]
    return {"name": "plc1", "poll_s": 0.001, "points": points, **more}


def _spread_values_arrived(plc: PlcSimulator, blocks: int) -> Any:
    def arrived(f: Field) -> bool:
        tank = f.component("tank1", "Tank")
        return all(
            getattr(tank, f"level{i}") == plc.read(1, "holding", 20 * i, 1)[0]
            and getattr(tank, f"level{i}_quality") is Quality.GOOD
            for i in range(blocks)
        )

    return arrived


async def test_pipelined_reads_put_a_polls_requests_on_the_wire_together(
    plc: PlcSimulator,
) -> None:
    blocks, delay_s = 8, 0.05
    plc.pipelined = True
    plc.set_fault(1, Faults(delay_s=delay_s))
    port = await plc.serve_tcp()
    device_config = _spread_device(blocks, max_outstanding=blocks)
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device_config)
    async with running_field(SECTION, config) as field:
        await field.until(_spread_values_arrived(plc, blocks), DEADLINE_S, "every block")
        device = field.part.devices["plc1"]
        reads, start = device.good_reads, time.monotonic()
        await field.until(lambda f: time.monotonic() - start >= 1.0, DEADLINE_S, "window")
        polls_per_s = (device.good_reads - reads) / blocks / (time.monotonic() - start)
        # One at a time a poll takes 8 x 50 ms (2.5 a second); all outstanding, ~50 ms.
        assert polls_per_s >= 8, f"{polls_per_s:.1f} polls/s"
        assert device.channel.health.errors == {}, device.channel.health.errors


async def test_pipelined_answers_out_of_order_are_matched_by_transaction_id(
    plc: PlcSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = 6
    requests = 0

    def every_other_request_slow(unit_id: int) -> Faults:
        nonlocal requests
        requests += 1
        return Faults(delay_s=0.04 if requests % 2 else 0.0)  # the next one overtakes it

    plc.pipelined = True
    for i in range(blocks):
        plc.write(1, "holding", 20 * i, [1000 + i])
    monkeypatch.setattr(plc, "faults_for", every_other_request_slow)
    port = await plc.serve_tcp()
    device_config = _spread_device(blocks, max_outstanding=4, poll_s=0.05)
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device_config)
    async with running_field(SECTION, config) as field:
        await field.until(_spread_values_arrived(plc, blocks), DEADLINE_S, "every block")
        await field.until(lambda f: requests >= 10 * blocks, DEADLINE_S, "ten polls")
        tank = field.component("tank1", "Tank")
        assert [getattr(tank, f"level{i}") for i in range(blocks)] == [
            1000.0 + i for i in range(blocks)
        ]
        health = field.health("plc1")
        assert health.state == "online" and health.errors == (), health


def test_max_outstanding_is_one_to_sixteen_and_tcp_only() -> None:
    tcp = {"tcp": {"host": "127.0.0.1"}}
    rtu = {"rtu": {"port": "/dev/ttyUSB0"}}
    device = {"name": "plc1", "points": [_point("level", 0)]}
    assert _config(tcp, {**device, "max_outstanding": 16}).lines[0].devices[0].max_outstanding
    for bad in (0, 17):
        with pytest.raises(ValueError, match="max_outstanding"):
            _config(tcp, {**device, "max_outstanding": bad})
    with pytest.raises(ValueError, match=r"devices\[0\] \(plc1\)\.max_outstanding: an RTU"):
        _config(rtu, {**device, "max_outstanding": 2})
    _config(rtu, {**device, "max_outstanding": 1})


def test_rtu_needs_eight_data_bits_and_a_written_string_fits_one_write() -> None:
    with pytest.raises(ValueError, match="Modbus RTU needs 8 data bits"):
        RtuLine.model_validate({"port": "/dev/ttyUSB0", "bytesize": 7})
    line = {"tcp": {"host": "127.0.0.1"}}
    label = _point("label", 0, type="string", count=124)
    _config(line, {"name": "plc1", "points": [label]})  # read in one request of 125
    with pytest.raises(ValueError, match="at most 123 registers"):
        _config(line, {"name": "plc1", "points": [{**label, "direction": "output"}]})


async def test_a_device_down_at_start_is_offline_then_connects(plc: PlcSimulator) -> None:
    port = free_port()  # nothing listens there until the PLC starts
    device = {"name": "plc1", "poll_s": 0.05, "points": [_point("level", 0)]}
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, device, **FAST_FAULTS)
    async with running_field(SECTION, config) as field:
        await field.until(lambda f: f.health("plc1").state == "offline", DEADLINE_S, "offline")
        assert field.health("plc1").error_count("disconnect") >= 1
        await plc.serve_tcp(port=port)
        await field.until(lambda f: _quality(f) is Quality.GOOD, DEADLINE_S, "connected")
        assert field.health("plc1").state == "online"


@pytest.mark.parametrize("transport", ["rtu", "tcp_gateway"])
async def test_a_dead_device_on_a_shared_line_leaves_the_healthy_one_its_rate(
    plc: PlcSimulator, transport: str
) -> None:
    poll_s, window_s = 0.05, 3.0
    if transport == "rtu":
        line: dict[str, Any] = {"rtu": {"port": await plc.serve_rtu(), "baudrate": 115200}}
    else:
        port = await plc.serve_tcp()
        line = {"tcp": {"host": "127.0.0.1", "port": port, "shared_connection": True}}
    devices = [
        {
            "name": f"unit{unit}",
            "unit_id": unit,
            "poll_s": poll_s,
            "points": [{**_point("level", 0), "entity": f"tank{unit}"}],  # one writer each
        }
        for unit in (1, 2)
    ]
    config = _config(
        line, *devices, timeout_s=0.2, retries=1, backoff={"initial_s": 0.5, "max_s": 1.5}
    )
    plc.set_fault(2, Faults(timeout=True))
    async with running_field(SECTION, config) as field:
        await field.until(
            lambda f: f.health("unit1").state == "online" and f.health("unit2").state == "offline",
            DEADLINE_S,
            "unit1 online, unit2 offline",
        )
        healthy, dead = field.part.devices["unit1"], field.part.devices["unit2"]
        reads, timeouts = healthy.good_reads, dead.channel.health.errors["timeout"]
        start = time.monotonic()
        await field.until(lambda f: time.monotonic() - start >= window_s, DEADLINE_S, "window")
        elapsed = time.monotonic() - start
        rate = (healthy.good_reads - reads) / elapsed
        # Each try at the dead unit costs 0.2 s of line time (an offline device is probed
        # without re-sends); polled every cycle it would leave the healthy unit under
        # 4 reads/s. Backed off, the healthy unit keeps most of its 20/s.
        assert rate >= 0.7 / poll_s, f"healthy unit read {rate:.1f}/s, wants {1 / poll_s:.0f}/s"
        assert dead.channel.health.errors["timeout"] > timeouts, "the dead unit is retried"


CONFIG_WITH_ERROR = """\
runtime:
  rate_hz: 100
modbus:
  lines:
    - tcp: {host: 127.0.0.1, port: 5020}
      devices:
        - name: plc1
          unit_id: 1
          points:
            - {entity: tank1, component: Tank, field: level, address: 0}
            - entity: tank1
              component: Tank
              field: alarm
              table: discrete
              direction: output
              address: 3
"""


def test_a_config_error_in_the_modbus_section_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(CONFIG_WITH_ERROR)
    with pytest.raises(ConfigError) as caught:
        load_config(path, [SECTION])
    [problem] = caught.value.problems
    assert problem.line == 11  # the "- entity: tank1" of the second point
    assert "discrete is read-only" in problem.message


def test_an_unknown_poll_group_and_a_bad_address_are_reported_where_they_are(
    tmp_path: Path,
) -> None:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(
        CONFIG_WITH_ERROR.replace("direction: output", "direction: input").replace(
            "address: 3", "address: 70000"
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, [SECTION])
    [problem] = caught.value.problems
    assert problem.line == 16
    assert "70000" in problem.message or "65535" in problem.message


async def test_a_connection_lost_between_pipelined_answers_is_a_disconnect() -> None:
    """A peer that answers the first of a poll's requests and then hangs up: the poll
    ends as the device's ``disconnect`` (health, backoff, STALE), not as an unexpected
    error of the whole link."""
    first_answered = asyncio.Event()

    async def answer_once_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
        count = struct.unpack(">BHH", await reader.readexactly(length - 1))[2]
        writer.write(struct.pack(">HHHBBB", tid, 0, 3 + 2 * count, unit, 3, 2 * count))
        writer.write(bytes(2 * count))
        await writer.drain()
        first_answered.set()
        writer.close()

    server = await asyncio.start_server(answer_once_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    points = [_point(f"r{i}", i * 125) for i in range(3)]  # three blocks: three requests
    device = {"name": "plc1", "unit_id": 1, "poll_s": 0.05, "max_outstanding": 2}
    config = _config({"tcp": {"host": "127.0.0.1", "port": port}}, {**device, "points": points})
    try:
        async with running_field(SECTION, config) as field:
            await field.until(
                lambda f: (
                    first_answered.is_set()
                    and dict(f.health("plc1").errors).get("disconnect", 0) > 0
                ),
                DEADLINE_S,
                "the hang-up counted as the device's disconnect",
            )
            assert dict(field.health("plc1").errors).get("bus", 0) == 0, "not an unexpected error"
    finally:
        server.close()
