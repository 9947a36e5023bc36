"""The safe values of a Modbus device go before its polls: an e-stop's write waits only
for the exchange under way, not for every poll that fell due before it."""

from __future__ import annotations

import time

from edgeloop.drivers.field_link import TOPIC_WRITE
from edgeloop.drivers.modbus.config import ModbusConfig
from edgeloop.drivers.modbus.io import ModbusIo
from edgeloop.priority import Priority
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_process import IoService
from edgeloop.realtime.ipc import Batch, Channel, Record, socketpair

POINTS = [
    {"entity": "pump1", "component": "Drive", "field": "speed", "address": 0,
     "direction": "output", "safe_value": 0},
    {"entity": "pump1", "component": "Drive", "field": "status", "address": 1},
]  # fmt: skip


def _modbus(service: IoService) -> ModbusIo:
    config = ModbusConfig.model_validate(
        {
            "lines": [
                {
                    "tcp": {"host": "127.0.0.1", "port": 1},
                    "devices": [{"name": "pump1", "poll_s": 0.01, "points": POINTS}],
                }
            ]
        }
    )
    return ModbusIo(config, service)


def _write(priority: Priority, value: int) -> Batch:
    return Batch(1, [Record(TOPIC_WRITE, "pump1", int(priority), [[0, value]])])


async def test_a_safe_write_goes_before_polls_due_earlier_and_a_normal_one_after() -> None:
    control_end, io_end = socketpair()
    heartbeats = Heartbeats()
    service = IoService(Channel(io_end), heartbeats)
    modbus = _modbus(service)
    (link,) = modbus.links
    device = modbus.devices["pump1"]
    for group in device.groups:
        group.due = time.monotonic() - 1.0  # the line is behind: every poll is overdue
    service.handle(_write(Priority.HIGH, 1000))
    now = time.monotonic()
    job = link._next_job(now)
    assert isinstance(job, tuple) and job[1] is not None, "a HIGH write waits its turn"
    service.handle(_write(Priority.CRITICAL, 0))
    assert link._next_job(now) == (device, None), "the safe value goes first"
    assert device.pending == {0: 0}, "and it replaces the value that was waiting"
    heartbeats.close()
    control_end.close()
    io_end.close()
