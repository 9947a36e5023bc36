"""A safe value does not wait for the answer to the poll under way on a device that takes
several outstanding requests (``max_outstanding`` > 1): it goes on the wire beside the
poll's read. With one request at a time it goes right after that answer.

The device is a raw Modbus TCP peer that can hold its answers to reads back (a PLC slow
to answer), answers writes at once, and notes the order of what it saw."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgeloop.clock import Time
from edgeloop.drivers.modbus.config import ModbusConfig
from edgeloop.drivers.modbus.plugin import SECTION
from edgeloop.safety.safe_state import SafeState
from tests.field_harness import Field, running_field

DEADLINE_S = 15.0  # generous: other test runs share this machine
MBAP = struct.Struct(">HHHB")  # transaction id, protocol, length, unit
READ, WRITE_SINGLE = 0x03, 0x06
SAFE_RAW = 7  # not the 0 the output is written with at start


class SlowPlc:
    """Reads are answered (zeros) unless ``hold`` is set; then they wait for
    ``release``. ``seen``: ("read", tid), ("answered", tid), ("write", value) in order."""

    def __init__(self) -> None:
        self.hold = False
        self.seen: list[tuple[str, int]] = []
        self.held: list[tuple[int, int, int]] = []  # tid, unit, count
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            while True:
                tid, _, length, unit = MBAP.unpack(await reader.readexactly(MBAP.size))
                pdu = await reader.readexactly(length - 1)
                if pdu[0] == READ:
                    count = struct.unpack(">H", pdu[3:5])[0]
                    self.seen.append(("read", tid))
                    if self.hold:
                        self.held.append((tid, unit, count))
                    else:
                        self._answer_read(tid, unit, count)
                elif pdu[0] == WRITE_SINGLE:
                    self.seen.append(("write", struct.unpack(">H", pdu[3:5])[0]))
                    writer.write(MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)  # the echo
                else:
                    self.seen.append(("other", pdu[0]))
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def release(self) -> None:
        self.hold = False
        for tid, unit, count in self.held:
            self._answer_read(tid, unit, count)
        self.held.clear()

    def _answer_read(self, tid: int, unit: int, count: int) -> None:
        assert self.writer is not None
        body = bytes((READ, 2 * count)) + bytes(2 * count)
        self.writer.write(MBAP.pack(tid, 0, len(body) + 1, unit) + body)
        self.seen.append(("answered", tid))


@pytest.fixture
async def plc() -> AsyncIterator[tuple[SlowPlc, int]]:
    device = SlowPlc()
    server = await asyncio.start_server(device.serve, "127.0.0.1", 0)
    yield device, server.sockets[0].getsockname()[1]
    server.close()


def _config(port: int, max_outstanding: int) -> ModbusConfig:
    point: dict[str, Any] = {
        "entity": "pump1",
        "component": "Drive",
        "address": 0,
        "type": "uint16",
    }
    device = {
        "name": "pump1",
        "poll_s": 0.02,
        "max_outstanding": max_outstanding,
        "points": [
            {**point, "field": "speed", "direction": "output", "safe_value": SAFE_RAW},
            {**point, "field": "status", "address": 1},
        ],
    }
    line = {"tcp": {"host": "127.0.0.1", "port": port}, "timeout_s": 10.0, "devices": [device]}
    return ModbusConfig.model_validate({"lines": [line]})


async def _hold_a_poll_and_trip(field: Field, device: SlowPlc) -> None:
    await field.until(lambda f: f.health("pump1").state == "online", DEADLINE_S, "online")
    device.hold = True
    await field.until(lambda f: bool(device.held), DEADLINE_S, "a poll's read held")
    field.world.resource(SafeState).trip("test", "a test's cause", field.world.resource(Time).tick)


@pytest.mark.parametrize("max_outstanding", [2, 4])
async def test_a_safe_value_goes_beside_the_poll_under_way(
    plc: tuple[SlowPlc, int], max_outstanding: int
) -> None:
    device, port = plc
    async with running_field(SECTION, _config(port, max_outstanding)) as field:
        await _hold_a_poll_and_trip(field, device)
        await field.until(lambda f: ("write", SAFE_RAW) in device.seen, DEADLINE_S, "safe write")
        assert device.held, "the read it went beside is still unanswered"
        device.release()
        reads = field.part.devices["pump1"].good_reads
        await field.until(
            lambda f: f.part.devices["pump1"].good_reads > reads, DEADLINE_S, "polls go on"
        )
        health = field.health("pump1")
        assert health.state == "online"
        assert health.error_count("write") == 0, health.errors


async def test_one_request_at_a_time_the_safe_value_follows_the_answer(
    plc: tuple[SlowPlc, int],
) -> None:
    device, port = plc
    async with running_field(SECTION, _config(port, 1)) as field:
        await _hold_a_poll_and_trip(field, device)
        waiting = field.part.devices["pump1"]
        await field.until(lambda f: waiting.safe_waiting, DEADLINE_S, "the safe value queued")
        assert ("write", SAFE_RAW) not in device.seen
        (held_tid, _, _) = device.held[0]
        device.release()
        await field.until(lambda f: ("write", SAFE_RAW) in device.seen, DEADLINE_S, "safe write")
        assert device.seen.index(("answered", held_tid)) < device.seen.index(("write", SAFE_RAW))
