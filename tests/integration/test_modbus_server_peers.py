"""Modbus server write authorisation per connection: each write is judged by the address
of the connection it came on, however the requests of several clients interleave."""

from __future__ import annotations

import asyncio
import socket
import time

from pymodbus.client import AsyncModbusTcpClient

from edgeloop.component import Component
from edgeloop.drivers.modbus.codec import encode
from edgeloop.drivers.modbus.server import SECTION, ModbusServerConfig
from edgeloop.names import Name
from tests.field_harness import Field, running_field

ALLOWED = "127.0.0.1"  # write_from's default: this host
REFUSED = "127.0.0.2"  # loopback too, but not in write_from
ROUNDS = 20


class Valve(Component):
    opening: float = 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def connected(field: Field, port: int, source: str) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=port, timeout=2, retries=0, source_address=(source, 0)
    )
    deadline = time.monotonic() + 10
    while not await client.connect():
        assert time.monotonic() < deadline, "the server did not listen"
        await field.tick()
    return client


async def test_interleaved_writes_of_two_clients_are_each_judged_by_their_own_address() -> None:
    config = ModbusServerConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": free_port(),
            "points": [
                {
                    "entity": "valve1",
                    "component": "Valve",
                    "field": "opening",
                    "type": "float32",
                    "address": 0,
                    "writable": True,
                },
            ],
        }
    )
    async with running_field(SECTION, config) as field:
        valve = Valve()
        field.world.spawn(Name("valve1"), valve)
        allowed = await connected(field, config.port, ALLOWED)
        refused = await connected(field, config.port, REFUSED)
        try:
            for round_ in range(ROUNDS):
                # both requests on the wire together: the server handles them back to back
                answers = await asyncio.gather(
                    refused.write_registers(0, encode("float32", -1.0), device_id=1),
                    allowed.write_registers(0, encode("float32", float(round_)), device_id=1),
                    refused.write_registers(0, encode("float32", -2.0), device_id=1),
                )
                codes = [answer.exception_code if answer.isError() else 0 for answer in answers]
                assert codes == [1, 0, 1], f"round {round_}: {codes}"
            await field.until(lambda f: valve.opening == ROUNDS - 1, what="the last allowed write")
        finally:
            allowed.close()
            refused.close()
