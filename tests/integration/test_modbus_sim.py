"""The simulated PLC, as a stock pymodbus client (or a raw socket) sees it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from edgeloop.drivers.modbus.sim import CHANGE_PERIOD_S, Faults, PlcSimulator, main

# Read 4 holding registers at 10 from unit 1, transaction 7, as bytes on the wire.
READ_REQUEST = struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, 10, 4)
READ_ANSWER_LENGTH = 7 + 2 + 4 * 2  # MBAP header, function and byte count, registers


@contextlib.asynccontextmanager
async def tcp_plc(**kwargs: object) -> AsyncIterator[tuple[PlcSimulator, AsyncModbusTcpClient]]:
    simulator = PlcSimulator(**kwargs)  # type: ignore[arg-type]
    port = await simulator.serve_tcp()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    assert await client.connect()
    try:
        yield simulator, client
    finally:
        client.close()
        await simulator.stop()


async def raw_exchange(port: int, request: bytes, timeout_s: float = 2.0) -> bytes:
    """What the PLC sends back to one request before closing or going quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(reader.read(1024), timeout_s)
        return b"(silence)"
    finally:
        writer.close()


async def test_stock_client_reads_and_writes_every_table() -> None:
    async with tcp_plc(unit_ids=(1, 2), size=100) as (simulator, client):
        await client.write_registers(10, [1, 2, 65535], device_id=2)
        holding = await client.read_holding_registers(10, count=3, device_id=2)
        await client.write_coils(5, [True, False, True], device_id=1)
        coils = await client.read_coils(5, count=3, device_id=1)
        simulator.write(1, "input", 0, [11, 12])
        simulator.write(1, "discrete", 98, [True, False])
        inputs = await client.read_input_registers(0, count=2, device_id=1)
        discrete = await client.read_discrete_inputs(98, count=2, device_id=1)

    assert holding.registers == [1, 2, 65535]
    assert simulator.read(2, "holding", 10, 3) == [1, 2, 65535]
    assert simulator.read(1, "holding", 10, 3) != [1, 2, 65535]  # units are separate
    assert coils.bits[:3] == [True, False, True]
    assert simulator.read(1, "coil", 5, 3) == [True, False, True]
    assert inputs.registers == [11, 12]
    assert discrete.bits[:2] == [True, False]


async def test_address_beyond_the_table_is_an_illegal_address() -> None:
    async with tcp_plc(size=100) as (_, client):
        answer = await client.read_holding_registers(99, count=2, device_id=1)
    assert answer.isError()
    assert answer.exception_code == 2


async def test_unknown_unit_is_answered_with_gateway_exception_over_tcp() -> None:
    async with tcp_plc(unit_ids=(1,)) as (simulator, client):
        answer = await client.read_holding_registers(0, count=1, device_id=9)
    assert answer.exception_code == 0x0B
    assert simulator.requests_served == 0


async def test_delay_fault_answers_late() -> None:
    async with tcp_plc() as (simulator, client):
        simulator.set_fault(1, Faults(delay_s=0.3))
        started = time.monotonic()
        answer = await client.read_holding_registers(0, count=1, device_id=1)
        took = time.monotonic() - started
    assert not answer.isError()
    assert took >= 0.3


async def test_timeout_fault_reads_the_request_and_never_answers() -> None:
    async with tcp_plc() as (simulator, client):
        simulator.set_fault(1, Faults(timeout=True))
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=1, device_id=1)
    assert simulator.requests_served == 1


async def test_exception_fault_answers_every_request_with_its_code() -> None:
    async with tcp_plc() as (simulator, client):
        simulator.set_fault(1, Faults(exception_code=4))
        read = await client.read_holding_registers(0, count=1, device_id=1)
        write = await client.write_coil(0, True, device_id=1)
    assert (read.exception_code, write.exception_code) == (4, 4)


async def test_garbage_fault_answers_random_bytes_as_long_as_the_answer() -> None:
    simulator = PlcSimulator()
    port = await simulator.serve_tcp()
    try:
        good = await raw_exchange(port, READ_REQUEST)
        simulator.set_fault(1, Faults(garbage=True))
        garbage = await raw_exchange(port, READ_REQUEST)
    finally:
        await simulator.stop()
    assert len(good) == READ_ANSWER_LENGTH
    assert good[:2] == b"\x00\x07"
    assert len(garbage) == READ_ANSWER_LENGTH
    assert garbage != good


async def test_disconnect_fault_closes_the_connection() -> None:
    simulator = PlcSimulator()
    port = await simulator.serve_tcp()
    try:
        simulator.set_fault(1, Faults(disconnect=True))
        answer = await raw_exchange(port, READ_REQUEST)
    finally:
        await simulator.stop()
    assert answer == b""  # closed, not silent


async def test_faults_are_per_unit_and_unit_0_means_every_unit() -> None:
    async with tcp_plc(unit_ids=(1, 2)) as (simulator, client):
        simulator.set_fault(1, Faults(exception_code=6))
        faulted = await client.read_holding_registers(0, count=1, device_id=1)
        healthy = await client.read_holding_registers(0, count=1, device_id=2)
        simulator.set_fault(0, Faults(exception_code=5))
        everyone = [
            (await client.read_holding_registers(0, count=1, device_id=unit)).exception_code
            for unit in (1, 2)
        ]
        simulator.clear_faults()
        cleared = await client.read_holding_registers(0, count=1, device_id=1)
    assert faulted.exception_code == 6
    assert not healthy.isError()
    assert everyone == [5, 5]
    assert not cleared.isError()


async def test_changing_registers_count_up() -> None:
    async with tcp_plc(changing=True) as (simulator, client):
        await client.write_register(0, 100, device_id=1)
        deadline = time.monotonic() + 10 * CHANGE_PERIOD_S + 5
        while time.monotonic() < deadline:
            value = (await client.read_holding_registers(0, count=1, device_id=1)).registers[0]
            if value > 101:
                break
            await asyncio.sleep(CHANGE_PERIOD_S)
        coil_before = simulator.read(1, "coil", 0, 1)
    assert value > 101
    assert simulator.read(1, "coil", 0, 1) == coil_before


async def test_rtu_over_a_pty_pair() -> None:
    simulator = PlcSimulator(unit_ids=(1, 2), size=50)
    path = await simulator.serve_rtu()
    client = AsyncModbusSerialClient(path, timeout=1, retries=0)
    try:
        assert await client.connect()
        await client.write_registers(3, [77, 78], device_id=2)
        holding = await client.read_holding_registers(3, count=2, device_id=2)
        await client.write_coil(49, True, device_id=1)
        coil = await client.read_coils(49, count=1, device_id=1)
        simulator.set_fault(2, Faults(exception_code=2))
        refused = await client.read_holding_registers(3, count=1, device_id=2)
        simulator.set_fault(2, Faults(disconnect=True))  # over RTU: silence
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(3, count=1, device_id=2)
        with pytest.raises(ModbusIOException):  # a unit not on the line: silence
            await client.read_holding_registers(3, count=1, device_id=9)
        still_there = await client.read_holding_registers(3, count=1, device_id=1)
    finally:
        client.close()
        await simulator.stop()
    assert path.startswith("/dev/")
    assert holding.registers == [77, 78]
    assert coil.bits[0] is True
    assert refused.exception_code == 2
    assert not still_there.isError()


async def test_stop_frees_the_port() -> None:
    simulator = PlcSimulator()
    port = await simulator.serve_tcp()
    await simulator.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    again = PlcSimulator()
    assert await again.serve_tcp(port=port) == port
    await again.stop()


def test_cli_serves_until_sigterm() -> None:
    code = "import sys; from edgeloop.drivers.modbus.sim import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--units", "1,2", "--size", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert "Modbus TCP on 127.0.0.1:" in banner
    assert "units 1,2" in banner


def test_cli_refuses_bad_unit_ids() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--units", "1,x"])
    assert exit_info.value.code == 2


def _read_request(transaction: int, address: int, count: int = 1) -> bytes:
    return struct.pack(">HHHBBHH", transaction, 0, 6, 1, 3, address, count)


async def _answers_to_requests_sent_together(
    simulator: PlcSimulator, requests: list[bytes], wanted: int, quiet_s: float = 0.5
) -> list[tuple[int, bytes]]:
    """(transaction id, pdu) of every answer to ``requests`` written in one segment, until
    ``wanted`` came or the PLC stayed quiet for ``quiet_s``."""
    port = await simulator.serve_tcp()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers: list[tuple[int, bytes]] = []
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        with contextlib.suppress(asyncio.TimeoutError):
            while len(answers) < wanted:
                header = await asyncio.wait_for(reader.readexactly(7), quiet_s)
                transaction, _, length, _ = struct.unpack(">HHHB", header)
                answers.append((transaction, await reader.readexactly(length - 1)))
    finally:
        writer.close()
        await simulator.stop()
    return answers


async def test_stock_server_answers_only_the_first_of_requests_sent_together() -> None:
    # What the docs say of pymodbus 3.16's server: the others wait in its buffer.
    requests = [_read_request(t, t) for t in (1, 2, 3)]
    answers = await _answers_to_requests_sent_together(PlcSimulator(), requests, 3)
    assert [transaction for transaction, _ in answers] == [1]


async def test_pipelined_mode_answers_every_request_sent_together() -> None:
    simulator = PlcSimulator(pipelined=True)
    requests = [_read_request(t, 10 * t, count=t) for t in range(1, 9)]
    answers = await _answers_to_requests_sent_together(simulator, requests, 8, quiet_s=5.0)
    assert sorted(transaction for transaction, _ in answers) == list(range(1, 9))
    for transaction, pdu in answers:
        registers = list(struct.unpack(f">{transaction}H", pdu[2:]))
        assert pdu[:2] == bytes([3, 2 * transaction])
        assert registers == simulator.read(1, "holding", 10 * transaction, transaction)


async def test_pipelined_answers_are_delayed_each_on_its_own_and_may_overtake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    simulator = PlcSimulator(pipelined=True)
    delays = iter([0.3, 0.0])  # the first request is slow, the second is not
    monkeypatch.setattr(simulator, "faults_for", lambda unit: Faults(delay_s=next(delays)))
    requests = [_read_request(1, 0), _read_request(2, 1)]
    answers = await _answers_to_requests_sent_together(simulator, requests, 2, quiet_s=5.0)
    assert [transaction for transaction, _ in answers] == [2, 1]
