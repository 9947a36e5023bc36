"""World fields served over Modbus TCP, as a stock pymodbus client sees and writes them."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient

from edgeloop.component import Component
from edgeloop.drivers.modbus.codec import decode, encode
from edgeloop.drivers.modbus.server import (
    SECTION,
    TOPIC_WRITE,
    ModbusServerConfig,
    ServedFields,
)
from edgeloop.names import Name
from edgeloop.priority import Priority
from edgeloop.realtime.ipc import Record
from edgeloop.safety.audit import AuditLog
from edgeloop.safety.safe_state import HeldOutputs, SafeState
from edgeloop.sim.ports import free_port
from tests.field_harness import Field, running_field


class Boiler(Component):
    temperature: float = 0.0
    setpoint: float = 0.0
    burns: int = 0
    running: bool = False


SETPOINT, RUNNING = 1, 3  # indexes of the setpoint and running points below
POINTS: list[dict[str, Any]] = [
    {"entity": "boiler1", "component": "Boiler", "field": "temperature", "type": "int16",
     "scale": 0.1, "table": "input", "address": 0},
    {"entity": "boiler1", "component": "Boiler", "field": "setpoint", "type": "float32",
     "table": "holding", "address": 10, "writable": True, "min": 0.0, "max": 100.0},
    {"entity": "boiler1", "component": "Boiler", "field": "burns", "type": "uint16",
     "table": "holding", "address": 12},
    {"entity": "boiler1", "component": "Boiler", "field": "running", "table": "coil",
     "address": 0, "writable": True},
]  # fmt: skip


def config(points: list[dict[str, Any]] = POINTS, **more: Any) -> ModbusServerConfig:
    return ModbusServerConfig.model_validate(
        {"host": "127.0.0.1", "port": free_port(), "unit_id": 1, "points": points, **more}
    )


@contextlib.asynccontextmanager
async def served(
    points: list[dict[str, Any]] = POINTS, **more: Any
) -> AsyncIterator[tuple[Field, AsyncModbusTcpClient, Boiler]]:
    """The server running with a boiler in the World, and a client connected to it."""
    chosen = config(points, **more)
    async with running_field(SECTION, chosen) as field:
        boiler = Boiler(temperature=21.5, setpoint=40.0, burns=3)
        field.world.spawn(Name("boiler1"), boiler)
        client = AsyncModbusTcpClient("127.0.0.1", port=chosen.port, timeout=2, retries=0)
        deadline = time.monotonic() + 10
        while not await client.connect():
            assert time.monotonic() < deadline, "the server did not listen"
            await field.tick()
        try:
            yield field, client, boiler
        finally:
            client.close()


async def ticking_until(
    field: Field, read: Callable[[], Awaitable[Any]], wanted: Callable[[Any], bool]
) -> Any:
    """Tick the App and ask the server until its answer is the wanted one."""
    deadline = time.monotonic() + 10
    while True:
        await field.tick()
        answer = await read()
        if wanted(answer):
            return answer
        assert time.monotonic() < deadline, f"never the wanted answer; last {answer}"


async def test_world_field_appears_in_its_register_scaled() -> None:
    async with served() as (field, client, boiler):
        temperature = await ticking_until(
            field,
            lambda: client.read_input_registers(0, count=1, device_id=1),
            lambda answer: not answer.isError(),
        )
        setpoint = await client.read_holding_registers(10, count=3, device_id=1)
        boiler.temperature = -1.2
        colder = await ticking_until(
            field,
            lambda: client.read_input_registers(0, count=1, device_id=1),
            lambda answer: answer.registers != temperature.registers,
        )
    assert temperature.registers == [215]
    assert decode("float32", setpoint.registers[:2]) == 40.0
    assert setpoint.registers[2] == 3
    assert decode("int16", colder.registers) == -12


async def test_client_write_to_a_writable_field_changes_the_world(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgeloop.modbus_server")
    async with served() as (field, client, boiler):
        wrote = await client.write_registers(10, encode("float32", 62.5), device_id=1)
        switched = await client.write_coil(0, True, device_id=1)
        await field.until(lambda f: boiler.setpoint == 62.5 and boiler.running, what="writes")
        read_back = await ticking_until(
            field,
            lambda: client.read_holding_registers(10, count=2, device_id=1),
            lambda answer: decode("float32", answer.registers) == 62.5,
        )
        served_fields = field.world.resource(ServedFields)
    assert not wrote.isError()
    assert switched.bits[0] is True  # the answer echoes the coil as written
    assert decode("float32", read_back.registers) == 62.5
    assert served_fields.writes_applied == 2
    assert "write from 127.0.0.1:" in caplog.text
    assert "boiler1.Boiler.setpoint = 62.5" in caplog.text


async def test_write_to_a_register_that_is_not_writable_is_refused() -> None:
    async with served() as (field, client, boiler):
        read_only = await client.write_register(12, 99, device_id=1)
        unmapped = await client.write_register(200, 1, device_id=1)
        half_a_float = await client.write_register(10, 0x4248, device_id=1)
        await field.tick(5)
    assert read_only.exception_code == 2
    assert unmapped.exception_code == 2
    assert half_a_float.exception_code == 2
    assert (boiler.burns, boiler.setpoint) == (3, 40.0)
    assert field.world.resource(ServedFields).writes_applied == 0


async def test_out_of_range_write_is_refused_and_the_world_unchanged() -> None:
    async with served() as (field, client, boiler):
        refused = await client.write_registers(10, encode("float32", 150.0), device_id=1)
        await field.tick(5)
    assert refused.exception_code == 3
    assert boiler.setpoint == 40.0


async def test_control_side_checks_writes_again_and_counts_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served() as (field, _, boiler):
        served_fields = field.world.resource(ServedFields)
        await field.until(lambda f: None not in served_fields.components, what="resolved")
        peer = "127.0.0.1:5000"
        field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[SETPOINT, 500.0]]))
        field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[2, 7.0]]))  # burns
        field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[SETPOINT, 7.5]]))
        await field.until(lambda f: served_fields.writes_applied == 1, what="the good write")
    assert boiler.setpoint == 7.5
    assert boiler.burns == 3
    assert served_fields.writes_refused == 2
    assert "write from 127.0.0.1:5000 refused: boiler1.Boiler.setpoint = 500.0" in caplog.text


async def test_writes_only_from_the_addresses_in_write_from() -> None:
    async with served(write_from=["10.0.0.0/8"]) as (field, client, boiler):
        refused = await client.write_registers(10, encode("float32", 50.0), device_id=1)
        served_fields = field.world.resource(ServedFields)
        peer = "10.1.2.3:5000"  # as if from a SCADA on the plant network
        field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[SETPOINT, 55.0]]))
        field.service.send(Record(TOPIC_WRITE, "127.0.0.1:1", Priority.HIGH, [[SETPOINT, 9.0]]))
        await field.until(lambda f: boiler.setpoint == 55.0, what="the allowed write")
        await field.tick(5)
    assert refused.exception_code == 1, "this host is not in write_from"
    assert boiler.setpoint == 55.0, "the control side checks write_from again"
    # One refused by the io side (the client's), one by the control side (127.0.0.1:1).
    await field.until(lambda f: served_fields.writes_refused == 2, what="both refusals counted")


async def test_every_write_applied_or_refused_is_audited_with_the_peer(tmp_path: Path) -> None:
    async with served() as (field, client, boiler):
        with AuditLog.open(tmp_path) as audit:
            field.world.insert_resource(audit)
            await client.write_registers(10, encode("float32", 62.5), device_id=1)
            await client.write_registers(10, encode("float32", 150.0), device_id=1)
            await client.write_register(12, 99, device_id=1)
            await field.until(
                lambda f: f.world.resource(ServedFields).writes_refused == 2, what="refusals"
            )
            assert audit.flush(5.0)
    assert boiler.setpoint == 62.5
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    commands = [json.loads(line) for line in lines if '"command"' in line]
    said = [(c["what"], c["value"], c["accepted"], c["reason"]) for c in commands]
    assert said == [
        ("modbus_server write boiler1.Boiler.setpoint", 62.5, True, "applied"),
        ("modbus_server write boiler1.Boiler.setpoint", 150.0, False, "150 is above max 100"),
        ("modbus_server write holding 12", None, False, "no writable point at holding 12"),
    ]
    assert all(re.fullmatch(r"modbus client 127\.0\.0\.1:\d+", c["by"]) for c in commands)


def test_write_from_defaults_to_this_host_only() -> None:
    chosen = config()
    assert chosen.may_write("127.0.0.1:40000") and chosen.may_write("[::1]:40000")
    assert not chosen.may_write("192.168.1.20:40000")


async def test_field_not_in_the_world_reads_as_device_failure() -> None:
    missing = {"entity": "boiler9", "component": "Boiler", "field": "setpoint",
               "type": "float32", "address": 20}  # fmt: skip
    async with served([*POINTS, missing]) as (field, client, _):
        present = await ticking_until(
            field,
            lambda: client.read_holding_registers(12, count=1, device_id=1),
            lambda answer: not answer.isError(),
        )
        absent = await client.read_holding_registers(20, count=2, device_id=1)
        other_unit = await client.read_holding_registers(12, count=1, device_id=2)
    assert present.registers == [3]
    assert absent.exception_code == 4
    assert other_unit.exception_code == 0x0B


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"table": "input", "writable": True}, "input is read-only"),
        ({"min": 0.0}, "set writable: true"),
        ({"writable": True, "min": 5.0, "max": 1.0}, "min 5.0 is above max 1.0"),
        ({"direction": "output"}, "a served point has writable"),
        ({"table": "coil", "type": "float32"}, "type must be bool"),
        ({"address": 11}, "overlaps points[1]"),
    ],
)
def test_config_mistakes_are_refused(change: dict[str, Any], message: str) -> None:
    point = {"entity": "boiler1", "component": "Boiler", "field": "burns", "type": "uint16",
             "table": "holding", "address": 30, **change}  # fmt: skip
    with pytest.raises(ValidationError, match=re.escape(message)):
        config([*POINTS, point])


async def test_a_value_that_cannot_be_encoded_fails_only_its_point() -> None:
    async with served() as (field, client, boiler):
        await ticking_until(
            field,
            lambda: client.read_holding_registers(10, count=2, device_id=1),
            lambda answer: not answer.isError(),
        )
        registers = field.part.registers
        boiler.setpoint = 1e39  # beyond float32
        boiler.burns = 4
        burns = await ticking_until(
            field,
            lambda: client.read_holding_registers(12, count=1, device_id=1),
            lambda answer: not answer.isError() and answer.registers == [4],
        )
        unencodable = await client.read_holding_registers(10, count=2, device_id=1)
        counted = registers.encode_errors
        boiler.setpoint = 55.0
        again = await ticking_until(
            field,
            lambda: client.read_holding_registers(10, count=2, device_id=1),
            lambda answer: not answer.isError(),
        )
    assert burns.registers == [4], "the other points of the snapshot are served"
    assert unencodable.exception_code == 4, "no value to serve for this point"
    assert counted >= 1
    assert decode("float32", again.registers) == 55.0


async def test_a_write_to_a_field_the_safe_state_holds_is_refused_and_others_taken(
    tmp_path: Path,
) -> None:
    async with served() as (field, _, boiler):
        served_fields = field.world.resource(ServedFields)
        await field.until(lambda f: None not in served_fields.components, what="resolved")
        # What the field bridge does for a device's output while the state holds it.
        held, safe = HeldOutputs(), SafeState()
        held.fields.add(("boiler1", "Boiler", "setpoint"))
        safe.trip("estop", "pressed", 1, latched=True)
        field.world.insert_resource(held)
        field.world.insert_resource(safe)
        peer = "127.0.0.1:5000"
        with AuditLog.open(tmp_path) as audit:
            field.world.insert_resource(audit)
            field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[SETPOINT, 7.5]]))
            await field.until(lambda f: served_fields.writes_refused == 1, what="the refusal")
            # a field the state does not hold is written, e-stop or not (field_writes)
            field.service.send(Record(TOPIC_WRITE, peer, Priority.HIGH, [[RUNNING, True]]))
            await field.until(lambda f: served_fields.writes_applied == 1, what="the write")
            assert audit.flush(5.0)
    assert boiler.setpoint == 40.0
    assert boiler.running is True
    assert "the safe state holds it: estop (pressed)" in (tmp_path / "audit.jsonl").read_text()
