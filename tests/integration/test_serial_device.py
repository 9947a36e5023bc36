"""The serial driver against the simulated sensor on real pty pairs, through the World."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from edgeloop.config import ConfigError, load_config
from edgeloop.drivers.points import Quality
from edgeloop.drivers.serial.config import SerialConfig
from edgeloop.drivers.serial.plugin import SECTION
from edgeloop.drivers.serial.sim import FRAME, READ_COMMAND, Fault, SensorSim
from tests.field_harness import Field, running_field

FAST = {"reopen_initial_s": 0.05, "reopen_max_s": 0.2}
CLIMATE_POINTS = [
    {"key": "T", "entity": "room1", "component": "Climate", "field": "temperature"},
    {"key": "H", "entity": "room1", "component": "Climate", "field": "humidity"},
    {"key": "N", "entity": "room1", "component": "Climate", "field": "count", "type": "uint32"},
]
BINARY_FRAME = {
    "start": "AA",
    "checksum": {"kind": "sum8"},
    "fields": [
        {"name": "temperature", "offset": 0, "type": "int16"},
        {"name": "humidity", "offset": 2, "type": "uint16"},
        {"name": "count", "offset": 4, "type": "uint32"},
        {"name": "ok", "offset": 8, "type": "uint8", "bit": 0},
    ],
}
BINARY_POINTS = [
    {"key": "temperature", "entity": "meter1", "component": "Meter", "field": "temperature",
     "scale": 0.01},
    {"key": "humidity", "entity": "meter1", "component": "Meter", "field": "humidity",
     "scale": 0.01},
    {"key": "count", "entity": "meter1", "component": "Meter", "field": "count",
     "type": "uint32"},
    {"key": "ok", "entity": "meter1", "component": "Meter", "field": "ok", "type": "bool"},
]  # fmt: skip


@contextlib.asynccontextmanager
async def running_sim(
    tmp_path: Path, name: str = "sensor", **options: Any
) -> AsyncIterator[SensorSim]:
    """A simulated sensor whose device appears at ``tmp_path/name`` (a by-id style link)."""
    options.setdefault("period_s", 0.02)
    sim = SensorSim(link=tmp_path / name, rng=random.Random(5), **options)
    sim.open()
    task = asyncio.create_task(sim.run())
    try:
        yield sim
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def config(*devices: dict[str, Any]) -> SerialConfig:
    return SerialConfig.model_validate({"devices": [{**FAST, **d} for d in devices]})


def climate(f: Field, entity: str = "room1", component: str = "Climate") -> Any:
    return f.component(entity, component)


def fresh_count_above(count: float, entity: str = "room1", component: str = "Climate") -> Any:
    def check(f: Field) -> bool:
        c = climate(f, entity, component)
        return c.count > count and c.count_quality is Quality.GOOD

    return check


def command_setpoint(sim: SensorSim, value: float) -> Any:
    """Set the setpoint as control logic would, each tick until the sensor has it: set
    between ticks, a reading arriving in the next tick would overwrite it unsent."""

    def check(f: Field) -> bool:
        climate(f).setpoint = value
        return sim.climate.setpoint == value

    return check


async def test_key_value_lines_streamed_reach_the_world(tmp_path: Path) -> None:
    async with running_sim(tmp_path) as sim:
        device = {
            "name": "sensor1",
            "port": sim.path,
            "key_value": {},
            "stream": {"timeout_ms": 2000},
            "points": CLIMATE_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first reading")
            first = climate(field).count
            await field.until(fresh_count_above(first + 5), what="readings keep coming")
            room = climate(field)
            assert 20.9 < room.temperature < 22.1 and room.temperature_quality is Quality.GOOD
            assert 37.9 < room.humidity < 42.1
            assert field.health("sensor1").state == "online"
            assert field.health("sensor1").errors == ()


async def test_regex_and_csv_devices_read_side_by_side(tmp_path: Path) -> None:
    async with (
        running_sim(tmp_path, "kv") as kv_sim,
        running_sim(tmp_path, "csv", line_format="csv") as csv_sim,
    ):
        regex = {
            "name": "by_regex",
            "port": kv_sim.path,
            "regex": r"T=(?P<temp>-?[\d.]+),H=(?P<hum>[\d.]+),.*N=(?P<n>\d+)",
            "points": [
                {"key": "temp", "entity": "room1", "component": "Climate", "field": "temperature"},
                {"key": "hum", "entity": "room1", "component": "Climate", "field": "humidity"},
                {"key": "n", "entity": "room1", "component": "Climate", "field": "count"},
            ],
        }
        csv = {
            "name": "by_csv",
            "port": csv_sim.path,
            "csv": {"separator": ","},
            "points": [
                {"key": 0, "entity": "room2", "component": "Climate", "field": "temperature"},
                {"key": 1, "entity": "room2", "component": "Climate", "field": "humidity"},
                {"key": 3, "entity": "room2", "component": "Climate", "field": "count"},
            ],
        }
        async with running_field(SECTION, config(regex, csv)) as field:
            await field.until(fresh_count_above(2), what="regex readings")
            await field.until(fresh_count_above(2, "room2"), what="csv readings")
            for room in ("room1", "room2"):
                assert 20.9 < climate(field, room).temperature < 22.1
                assert 37.9 < climate(field, room).humidity < 42.1


async def test_binary_frames_answer_polls_and_reach_the_world(tmp_path: Path) -> None:
    async with running_sim(tmp_path, mode="binary", stream=False) as sim:
        device = {
            "name": "meter1",
            "port": sim.path,
            "mode": "binary",
            "frame": BINARY_FRAME,
            "poll": {"request": FRAME.build(READ_COMMAND).hex(" "), "period_ms": 30},
            "points": BINARY_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(3, "meter1", "Meter"), what="polled frames")
            meter = climate(field, "meter1", "Meter")
            assert 20.9 < meter.temperature < 22.1, "int16 hundredths, scaled"
            assert 37.9 < meter.humidity < 42.1
            assert meter.ok is True and meter.ok_quality is Quality.GOOD
            assert sim.answered >= 3 and sim.sent == 0, "every frame was an answer"
            health = field.health("meter1")
            assert health.state == "online" and health.rtt_ms > 0


async def test_ascii_poll_with_an_output_written_and_read_back(tmp_path: Path) -> None:
    async with running_sim(tmp_path, stream=False) as sim:
        setpoint = {
            "key": "S",
            "entity": "room1",
            "component": "Climate",
            "field": "setpoint",
            "direction": "both",
            "write": "SET {value:.2f}\r\n",
        }
        device = {
            "name": "sensor1",
            "port": sim.path,
            "key_value": {},
            "poll": {"request": "READ\r\n", "period_ms": 30, "timeout_ms": 500},
            "points": [*CLIMATE_POINTS, setpoint],
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(2), what="polled lines")
            await field.until(command_setpoint(sim, 3.25), what="SET reaches the sensor")
            await field.until(lambda f: climate(f).setpoint == 3.25, what="setpoint read back")
            assert "SET 3.25" in sim.commands
            assert set(sim.commands) == {"READ", "SET 3.25"}, "one request per poll, no junk"
            assert field.health("sensor1").errors == ()


async def test_an_unreadable_value_is_bad_and_ignored_lines_are_no_garbage(
    tmp_path: Path,
) -> None:
    async with running_sim(tmp_path, stream=False) as sim:
        device = {"name": "sensor1", "port": sim.path, "key_value": {}, "ignore": "^#"}
        device["points"] = CLIMATE_POINTS

        def sensor_says(f: Field) -> bool:
            # written until the driver has the port open and reads it
            sim.port.write(b"# sensor v1.2\r\nT=--.-,H=40.5,N=7\r\n")
            return bool(climate(f).count == 7)

        async with running_field(SECTION, config(device)) as field:
            await field.until(sensor_says, what="a line with an unreadable temperature")
            room = climate(field)
            assert room.temperature_quality is Quality.BAD
            assert room.humidity == 40.5 and room.humidity_quality is Quality.GOOD
            assert field.health("sensor1").errors == (), "a passed-over line is no garbage"


async def test_garbage_and_cut_lines_are_counted_without_touching_values(tmp_path: Path) -> None:
    async with running_sim(tmp_path) as sim:
        device = {"name": "sensor1", "port": sim.path, "key_value": {}, "max_line_bytes": 64}
        device["points"] = CLIMATE_POINTS
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first reading")
            sim.inject(Fault.GARBAGE, 0.3)  # 64 bytes a period, no end of line in them
            await field.until(
                lambda f: f.health("sensor1").error_count("garbage") >= 3, what="garbage counted"
            )
            await field.until(lambda f: not sim.active(Fault.GARBAGE), what="garbage over")
            sim.inject(Fault.CORRUPT, 10)
            counted = field.health("sensor1").error_count("garbage")
            await field.until(
                lambda f: f.health("sensor1").error_count("garbage") >= counted + 3,
                what="cut lines counted",
            )
            during = climate(field).count
            await field.until(
                lambda f: f.health("sensor1").error_count("garbage") >= counted + 6,
                what="more cut lines",
            )
            assert climate(field).count == during, "a cut line changes no value"
            sim.clear()
            await field.until(fresh_count_above(during), what="good lines again")
            await field.until(lambda f: f.health("sensor1").state == "online", what="online")
            assert len(field.part.links["sensor1"].splitter._buffer) <= 64


async def test_binary_checksum_errors_are_counted_and_frames_resume(tmp_path: Path) -> None:
    async with running_sim(tmp_path, mode="binary") as sim:
        device = {"name": "meter1", "port": sim.path, "mode": "binary", "frame": BINARY_FRAME}
        device["points"] = BINARY_POINTS
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0, "meter1", "Meter"), what="a first frame")
            sim.inject(Fault.CORRUPT, 0.3)
            await field.until(
                lambda f: f.health("meter1").error_count("garbage") >= 3, what="checksums counted"
            )
            assert "checksum" in field.health("meter1").last_error
            count = climate(field, "meter1", "Meter").count
            await field.until(fresh_count_above(count + 2, "meter1", "Meter"), what="frames again")


async def test_silence_turns_values_stale_and_the_device_offline_until_it_talks(
    tmp_path: Path,
) -> None:
    async with running_sim(tmp_path) as sim:
        device = {
            "name": "sensor1",
            "port": sim.path,
            "key_value": {},
            "stream": {"timeout_ms": 150},
            "offline_after": 2,
            "points": CLIMATE_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first reading")
            sim.inject(Fault.SILENCE, 30)

            def stale_offline(f: Field) -> bool:
                room = climate(f)
                offline = f.health("sensor1").state == "offline"
                return offline and room.temperature_quality is Quality.STALE

            await field.until(stale_offline, what="stale and offline")
            assert field.health("sensor1").error_count("timeout") >= 2
            count = climate(field).count
            sim.clear()
            await field.until(fresh_count_above(count), what="fresh again")
            await field.until(lambda f: f.health("sensor1").state == "online", what="online")


async def test_an_unanswered_poll_is_a_timeout_and_stales_the_values(tmp_path: Path) -> None:
    async with running_sim(tmp_path, stream=False) as sim:
        device = {
            "name": "sensor1",
            "port": sim.path,
            "key_value": {},
            "poll": {"request": "READ\r\n", "period_ms": 30, "timeout_ms": 100},
            "offline_after": 1000,  # stale from the timeout itself, not from going offline
            "points": CLIMATE_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first answer")
            sim.inject(Fault.SILENCE, 30)
            await field.until(
                lambda f: climate(f).count_quality is Quality.STALE, what="stale after a timeout"
            )
            assert field.health("sensor1").error_count("timeout") >= 1
            assert "no answer to READ" in field.health("sensor1").last_error
            sim.clear()
            await field.until(lambda f: f.health("sensor1").state == "online", what="answers again")


async def test_a_slow_answer_shows_in_the_round_trip_time(tmp_path: Path) -> None:
    async with running_sim(tmp_path, stream=False) as sim:
        device = {
            "name": "sensor1",
            "port": sim.path,
            "key_value": {},
            "poll": {"request": "READ\r\n", "period_ms": 30, "timeout_ms": 1000},
            "points": CLIMATE_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first answer")
            sim.inject(Fault.DELAY, 30, delay_s=0.08)
            await field.until(lambda f: f.health("sensor1").rtt_ms >= 80, what="a slow rtt")
            assert field.health("sensor1").errors == (), "slow is not late"


async def test_unplug_and_replug_reopens_the_link_with_backoff(tmp_path: Path) -> None:
    async with running_sim(tmp_path) as sim:
        link = tmp_path / "sensor"
        setpoint = {"entity": "room1", "component": "Climate", "field": "setpoint"}
        setpoint |= {"direction": "output", "write": "SET {value:.1f}\r\n"}
        points = [*CLIMATE_POINTS, setpoint]
        device = {"name": "sensor1", "port": str(link), "key_value": {}, "points": points}
        async with running_field(SECTION, config(device)) as field:
            await field.until(fresh_count_above(0), what="a first reading")
            await field.until(command_setpoint(sim, 1.5), what="SET reaches the sensor")
            sim.inject(Fault.UNPLUG, 0.8)
            assert not link.exists(), "the link goes with the adapter"

            def unplugged(f: Field) -> bool:
                offline = f.health("sensor1").state == "offline"
                return offline and climate(f).count_quality is Quality.STALE

            await field.until(unplugged, what="offline and stale while unplugged")
            await field.until(
                lambda f: f.health("sensor1").error_count("disconnect") >= 3,
                what="reopening with backoff while the path is gone",
            )
            assert "could not open port" in field.health("sensor1").last_error
            count = climate(field).count
            await field.until(fresh_count_above(count), timeout_s=15, what="fresh after replug")
            await field.until(lambda f: f.health("sensor1").state == "online", what="online")
            assert link.exists()
            assert sim.commands.count("SET 1.5") == 2, "outputs are sent again after a replug"


async def test_a_port_missing_at_start_is_reported_and_found_when_it_appears(
    tmp_path: Path,
) -> None:
    device = {
        "name": "sensor1",
        "port": str(tmp_path / "sensor"),
        "key_value": {},
        "points": CLIMATE_POINTS,
    }
    async with running_field(SECTION, config(device)) as field:
        await field.until(lambda f: f.health("sensor1").state == "offline", what="offline")
        assert "disconnect" in field.health("sensor1").last_error
        async with running_sim(tmp_path):
            await field.until(fresh_count_above(0), timeout_s=15, what="readings once plugged in")


# -- config ---------------------------------------------------------------------------------


def test_a_bad_serial_section_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(
        "serial:\n"
        "  devices:\n"
        "    - name: sensor1\n"
        "      port: /dev/ttyUSB0\n"
        "      stopbits: 3\n"
        "      regex: 'T=(?P<t>[0-9.]+)'\n"
        "      points:\n"
        "        - {key: t, entity: room1, component: Climate, field: temperature}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, [SECTION])
    [problem] = caught.value.problems
    assert problem.line == 5, str(problem)
    assert "stopbits" in problem.message


def test_a_request_with_backslashes_from_single_quotes_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "edgeloop.yaml"
    path.write_text(
        "serial:\n"
        "  devices:\n"
        "    - name: sensor1\n"
        "      port: /dev/ttyUSB0\n"
        "      key_value: {}\n"
        "      poll: {request: 'READ\\r\\n'}\n"
        "      points: [{key: T, entity: room1, component: Climate, field: temperature}]\n",
        encoding="utf-8",
    )
    [warning] = load_config(path, [SECTION]).warnings
    assert warning.line == 6 and "double quotes" in warning.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regex": "T=(?P<t>.*)", "key_value": None}, "no group 'T'"),
        ({"key_value": None}, "give one parse rule"),
        ({"csv": {}, "key_value": None}, "csv columns are numbered"),
        ({"stream": {}, "poll": {"request": "READ\r\n"}}, "not both"),
        ({"mode": "binary"}, "frame:"),
        ({"parity": "maybe"}, "parity"),
        ({"baudrate": True}, "baudrate"),
    ],
)
def test_device_config_mistakes_are_refused(change: dict[str, Any], message: str) -> None:
    device = {"name": "s1", "port": "/dev/ttyUSB0", "key_value": {}, "points": CLIMATE_POINTS}
    device = {k: v for k, v in {**device, **change}.items() if v is not None}
    with pytest.raises(pydantic.ValidationError, match=message):
        config(device)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"direction": "output"}, "write: an output needs a template"),
        ({"direction": "output", "write": "SET {val}\r\n"}, "cannot be filled in"),
        ({"write": "SET {value}\r\n"}, "only output points write"),
    ],
)
def test_point_config_mistakes_are_refused(point: dict[str, Any], message: str) -> None:
    base = {"key": "S", "entity": "room1", "component": "Climate", "field": "setpoint"}
    device = {"name": "s1", "port": "/dev/ttyUSB0", "key_value": {}, "points": [base | point]}
    with pytest.raises(pydantic.ValidationError, match=message):
        config(device)


def test_binary_config_mistakes_are_refused() -> None:
    device = {"name": "m1", "port": "/dev/ttyUSB0", "mode": "binary", "frame": BINARY_FRAME}
    with pytest.raises(pydantic.ValidationError, match="no field 'power'"):
        config({**device, "points": [{**BINARY_POINTS[0], "key": "power"}]})
    with pytest.raises(pydantic.ValidationError, match="not hex bytes"):
        config({**device, "points": BINARY_POINTS, "poll": {"request": "READ"}})
    bad_bit = {**BINARY_FRAME, "fields": [{"name": "ok", "offset": 0, "type": "uint8", "bit": 9}]}
    with pytest.raises(pydantic.ValidationError, match="beyond the 8 bits"):
        config({**device, "frame": bad_bit, "points": [BINARY_POINTS[3]]})
    assert config({**device, "points": BINARY_POINTS}).devices[0].frame is not None


async def test_an_integer_too_large_for_a_number_is_bad(tmp_path: Path) -> None:
    async with running_sim(tmp_path, stream=False) as sim:
        device = {"name": "sensor1", "port": sim.path, "key_value": {}, "max_line_bytes": 1024}
        device["points"] = CLIMATE_POINTS
        huge = b"9" * 400  # int() takes it, float() cannot

        def sensor_says(f: Field) -> bool:
            sim.port.write(b"T=21.5,H=40.5,N=" + huge + b"\r\n")
            return bool(climate(f).count_quality is Quality.BAD)

        async with running_field(SECTION, config(device)) as field:
            await field.until(sensor_says, what="a line with a huge count")
            room = climate(field)
            assert room.temperature == 21.5 and room.temperature_quality is Quality.GOOD
            assert field.health("sensor1").state == "online"


@contextlib.contextmanager
def bare_pty() -> Any:
    """A pty pair: the driver opens the slave's path, the test is the device on the master."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def command_device(path: str, template: str) -> dict[str, Any]:
    setpoint = {"entity": "room1", "component": "Climate", "field": "setpoint"}
    setpoint |= {"direction": "output", "write": template}
    return {
        "name": "sensor1",
        "port": path,
        "key_value": {},
        "stream": {"timeout_ms": 60_000},
        "points": [CLIMATE_POINTS[0], setpoint],
    }


def read_into(master: int, received: bytearray) -> None:
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(master, 65536):
            received += chunk


async def test_a_command_the_port_cannot_take_now_is_sent_when_it_can(tmp_path: Path) -> None:
    with bare_pty() as (master, slave):
        device = command_device(os.ttyname(slave), "SET {value:.2f}\r\n")
        async with running_field(SECTION, config(device)) as field:
            link = field.part.links["sensor1"]
            await field.until(lambda f: link._fd >= 0, what="the port open")
            termios.tcflow(slave, termios.TCOOFF)  # output suspended: writes get EAGAIN
            received = bytearray()
            read_into(master, received)
            climate(field).setpoint = 3.25
            await field.until(
                lambda f: link._written.get(1) == b"SET 3.25\r\n", what="the write tried"
            )
            before = len(received)
            read_into(master, received)
            assert len(received) == before, "nothing goes out while output is suspended"
            termios.tcflow(slave, termios.TCOON)

            def arrived(f: Field) -> bool:
                read_into(master, received)
                return received.endswith(b"SET 3.25\r\n")

            await field.until(arrived, what="the command once the port takes it")
            # The bridge's first write (the field's initial 0) may go ahead of it.
            assert bytes(received) in (b"SET 3.25\r\n", b"SET 0.00\r\nSET 3.25\r\n")
            assert field.health("sensor1").error_count("write") == 0


async def test_a_command_longer_than_the_port_buffer_goes_out_whole(tmp_path: Path) -> None:
    # 99 996 bytes: more than a pty (or a UART driver) buffers, so it goes in pieces.
    with bare_pty() as (master, slave):
        device = command_device(os.ttyname(slave), "SET {value:>99990.1f}\r\n")
        async with running_field(SECTION, config(device)) as field:
            link = field.part.links["sensor1"]
            await field.until(lambda f: link._fd >= 0, what="the port open")
            climate(field).setpoint = 7.5
            received = bytearray()

            def arrived(f: Field) -> bool:
                read_into(master, received)
                return received.endswith(b" 7.5\r\n")

            await field.until(arrived, what="the whole command")
            # The bridge's first write (the field's initial 0) may go ahead of it.
            *commands, end = bytes(received).split(b"\r\n")
            assert end == b"" and 1 <= len(commands) <= 2
            assert all(len(c) == 99_994 and c.startswith(b"SET  ") for c in commands)
            assert field.health("sensor1").error_count("write") == 0


async def test_stop_ends_a_poll_whose_answer_arrives_with_the_stop(tmp_path: Path) -> None:
    # The answer and the stop in one pass of the event loop: Python 3.11's wait_for
    # returned the answer and dropped the cancel, and the poll loop ran on for ever.
    with bare_pty() as (_master, slave):
        device = {
            "name": "sensor1",
            "port": os.ttyname(slave),
            "key_value": {},
            "poll": {"request": "READ\r\n", "period_ms": 1000, "timeout_ms": 60_000},
            "points": CLIMATE_POINTS,
        }
        async with running_field(SECTION, config(device)) as field:
            link = field.part.links["sensor1"]
            await field.until(lambda f: link._reply is not None, what="a poll waiting")
            assert link._reply is not None
            link._reply.set_result(None)
            # well inside RECANCEL_S: the first cancel ends it, not the base's second one
            async with asyncio.timeout(0.5):
                await link.stop()
            assert link._task is None
