"""The driver's own Modbus TCP framing against a raw socket peer: transaction ids,
answers matched out of order, garbage counted, each request timed out on its own."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import DecodePDU

from edgeloop.drivers.modbus.mbap import MbapConnection

READ_ONE = bytes([3]) + struct.pack(">HH", 0, 1)  # FC3, 1 register at 0
DEADLINE_S = 5.0


class _Peer:
    """A TCP peer that hands the test every request frame it reads."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        while header := await reader.readexactly(7):
            tid, _, length, unit = struct.unpack(">HHHB", header)
            await self.frames.put((tid, unit, await reader.readexactly(length - 1)))

    def answer(self, tid: int, value: int, unit: int = 1) -> None:
        assert self.writer is not None
        self.writer.write(struct.pack(">HHHBBBH", tid, 0, 5, unit, 3, 2, value))


@pytest.fixture
async def peer() -> AsyncIterator[tuple[_Peer, MbapConnection]]:
    device = _Peer()
    server = await asyncio.start_server(device.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = await MbapConnection.open("127.0.0.1", port, 0.3, DecodePDU(is_server=False))
    yield device, connection
    connection.close()
    server.close()


async def _requests(device: _Peer, count: int) -> list[int]:
    async with asyncio.timeout(DEADLINE_S):
        return [(await device.frames.get())[0] for _ in range(count)]


async def test_answers_out_of_order_reach_their_own_requests(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    device, connection = peer
    answers = [connection.send(1, READ_ONE) for _ in range(3)]
    connection.flush()
    tids = await _requests(device, 3)
    assert len(set(tids)) == 3
    for tid, value in reversed(list(zip(tids, (10, 20, 30), strict=True))):
        device.answer(tid, value)
    async with asyncio.timeout(DEADLINE_S):
        got = [list((await answer).registers) for answer in answers]
    assert got == [[10], [20], [30]]
    assert connection.garbage == 0


async def test_an_unknown_transaction_id_is_garbage_and_the_request_times_out_alone(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    device, connection = peer
    slow, quick = connection.send(1, READ_ONE), connection.send(1, READ_ONE)
    connection.flush()
    tids = await _requests(device, 2)
    device.answer((tids[0] + 100) & 0xFFFF, 1)  # nothing waits for it
    device.answer(tids[1], 2)
    async with asyncio.timeout(DEADLINE_S):
        assert list((await quick).registers) == [2]
        with pytest.raises(TimeoutError):
            await slow
    assert connection.garbage == 1
    assert connection.outstanding == {}


async def test_an_answer_from_another_unit_fails_its_request_as_garbage(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    device, connection = peer
    answer = connection.send(1, READ_ONE)
    connection.flush()
    [tid] = await _requests(device, 1)
    device.answer(tid, 1, unit=9)
    async with asyncio.timeout(DEADLINE_S):
        with pytest.raises(ModbusIOException):
            await answer
    assert connection.garbage == 1


async def test_transaction_ids_wrap_and_skip_those_still_outstanding(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    _, connection = peer
    first = connection.send(1, READ_ONE)  # id 1, left outstanding
    for _ in range(0xFFFF - 1):  # ids 2 .. 65535, each answered at once (no socket)
        connection.send(1, READ_ONE)
        tid = max(connection.outstanding)
        connection.data_received(struct.pack(">HHHBBBH", tid, 0, 5, 1, 3, 2, 0))
    assert list(connection.outstanding) == [1]
    connection.send(1, READ_ONE)  # wraps to 0, then 2: never 1
    assert sorted(connection.outstanding) == [0, 1]
    connection.send(1, READ_ONE)
    assert sorted(connection.outstanding) == [0, 1, 2]
    assert not first.done()


async def test_the_connection_lost_fails_every_outstanding_request(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    device, connection = peer
    answers = [connection.send(1, READ_ONE) for _ in range(2)]
    connection.flush()
    await _requests(device, 2)
    assert device.writer is not None
    device.writer.close()
    async with asyncio.timeout(DEADLINE_S):
        for answer in answers:
            with pytest.raises(ConnectionError):
                await answer
    assert not connection.connected


async def test_a_late_answer_is_counted_late_not_garbage(
    peer: tuple[_Peer, MbapConnection],
) -> None:
    device, connection = peer
    answer = connection.send(1, READ_ONE)
    connection.flush()
    (tid,) = await _requests(device, 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(DEADLINE_S):
            await answer
    device.answer(tid, 7)  # the slow device answers after all
    probe = connection.send(1, READ_ONE)  # the next exchange shows the late one was read
    connection.flush()
    (next_tid,) = await _requests(device, 1)
    device.answer(next_tid, 8)
    async with asyncio.timeout(DEADLINE_S):
        assert list((await probe).registers) == [8]
    assert connection.late == 1
    assert connection.garbage == 0
    assert not connection.heard_garbage_since(0.0)


class _ForeignTransport:
    """A transport that is not an ``asyncio.Transport`` subclass, as uvloop's are (the io
    process runs on uvloop where it is installed)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_a_transport_of_another_event_loop_carries_requests() -> None:
    connection = MbapConnection(0.3, DecodePDU(is_server=False))
    transport = _ForeignTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    answer = connection.send(1, READ_ONE)
    connection.flush()
    assert connection.connected
    [frame] = transport.written
    tid = struct.unpack(">H", frame[:2])[0]
    connection.data_received(struct.pack(">HHHBBBH", tid, 0, 5, 1, 3, 2, 42))
    async with asyncio.timeout(DEADLINE_S):
        assert list((await answer).registers) == [42]
    connection.close()
