"""Modbus TCP framing of our own: one connection with several transactions outstanding.

pymodbus 3.16's client keeps one request in flight per connection (its transaction
manager serialises them) and costs more per exchange than the framing needs. A
connection here is an asyncio Protocol that frames requests in MBAP headers itself:

- ``send`` queues a request under a transaction id (16-bit, wrapping, never one still
  outstanding) and returns the future of its answer; ``flush`` writes every queued
  request in one transport write, so requests due together leave together.
- Answers are matched by transaction id, in whatever order they come. Each request
  times out on its own (``TimeoutError``); the connection lost fails every outstanding
  one (``ConnectionError``); an answer from another unit, with another function code or
  that does not decode fails its request (``ModbusIOException``).
- An answer with a transaction id nothing waits for, and bytes that break the framing,
  are garbage: counted (``garbage``), the framing resynchronised by dropping what is
  buffered. A request that then times out was answered with garbage, not silence
  (``heard_garbage_since``). An answer to a request that timed out lately is a slow
  device's, counted as ``late``, not garbage.

pymodbus's PDU classes decode the answers (its registered classes, so the driver's
faster register answer is used).
"""

from __future__ import annotations

import asyncio
import collections
import math
import struct
import time
from typing import NamedTuple, cast

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
HEADER = MBAP.size
MAX_LENGTH = 254  # the length field counts the unit id and a PDU of at most 253 bytes
MAX_OUTSTANDING = 16  # the most a device may be configured for
EXPIRED_KEPT = 64  # transaction ids of timed-out requests whose late answers are known


class _Outstanding(NamedTuple):
    answer: asyncio.Future[ModbusPDU]
    timer: asyncio.TimerHandle
    unit: int
    function: int


class MbapConnection(asyncio.Protocol):
    """A Modbus TCP client connection; ``open`` it, ``send`` and ``flush``, ``close``."""

    def __init__(self, timeout_s: float, decoder: DecodePDU) -> None:
        self.timeout_s = timeout_s
        self.garbage = 0  # frames or runs of bytes that matched no request
        self.outstanding: dict[int, _Outstanding] = {}
        self._answers = {code: pair[1] for code, pair in decoder.pdu_table.items()}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._queued: list[bytes] = []
        self._tid = 0
        self._garbage_at = -math.inf
        # Requests that timed out lately: a device that answers late is slow, not
        # garbled, and its answer must not make the next timeout read as garbage.
        self._expired: collections.deque[int] = collections.deque(maxlen=EXPIRED_KEPT)
        self.late = 0  # answers that came after their request timed out

    @classmethod
    async def open(
        cls, host: str, port: int, timeout_s: float, decoder: DecodePDU
    ) -> MbapConnection:
        """Connect within ``timeout_s``; ``OSError`` or ``TimeoutError`` if it cannot."""
        connection = cls(timeout_s, decoder)
        async with asyncio.timeout(timeout_s):
            await connection._loop.create_connection(lambda: connection, host, port)
        return connection

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, unit: int, request: bytes) -> asyncio.Future[ModbusPDU]:
        """Queue ``request`` (a PDU: function code and data) for ``unit``; its answer."""
        if not self.connected:
            raise ConnectionError("not connected")
        tid = self._tid
        while True:
            tid = (tid + 1) & 0xFFFF
            if tid not in self.outstanding:
                break
        self._tid = tid
        answer: asyncio.Future[ModbusPDU] = self._loop.create_future()
        timer = self._loop.call_later(self.timeout_s, self._expire, tid)
        self.outstanding[tid] = _Outstanding(answer, timer, unit, request[0])
        self._queued.append(MBAP.pack(tid, 0, len(request) + 1, unit) + request)
        return answer

    def flush(self) -> None:
        """Write every queued request, in one write."""
        if self._queued and self._transport is not None:
            self._transport.write(b"".join(self._queued))
        self._queued.clear()

    def heard_garbage_since(self, when: float) -> bool:
        return self._garbage_at >= when or bool(self._buffer)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._fail_all(ConnectionError("connection closed"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio classes.
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail_all(ConnectionError(f"connection lost: {exc}" if exc else "connection lost"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at, end = 0, len(buffer)
        while end - at >= HEADER:
            tid, protocol, length, unit = MBAP.unpack_from(buffer, at)
            if protocol != 0 or not 2 <= length <= MAX_LENGTH:
                self._garbled()  # the framing is lost: start again with the next read
                at = end
                break
            stop = at + HEADER - 1 + length
            if stop > end:
                break
            self._answer(tid, unit, buffer[at + HEADER : stop])
            at = stop
        self._buffer = buffer[at:]

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        waiting = self.outstanding.pop(tid, None)
        if waiting is None:
            if tid in self._expired:
                self._expired.remove(tid)
                self.late += 1
            else:
                self._garbled()
            return
        waiting.timer.cancel()
        if waiting.answer.done():  # abandoned by its sender
            return
        answer = self._decode(pdu)
        if (
            answer is None
            or unit != waiting.unit
            or answer.function_code & 0x7F != (waiting.function)
        ):
            self._garbled()
            waiting.answer.set_exception(
                ModbusIOException(f"an answer that does not fit the request: {pdu.hex()}")
            )
            return
        answer.dev_id, answer.transaction_id = unit, tid
        waiting.answer.set_result(answer)

    def _decode(self, pdu: bytes) -> ModbusPDU | None:
        function = pdu[0]
        answer: ModbusPDU
        if function & 0x80:
            answer = ExceptionResponse(function & 0x7F)
        else:
            kind = self._answers.get(function)
            if kind is None:
                return None
            answer = kind()
        try:
            answer.decode(pdu[1:])
        except (ModbusIOException, ValueError, IndexError, struct.error):
            return None
        return answer

    def _garbled(self) -> None:
        self.garbage += 1
        self._garbage_at = time.monotonic()

    def _expire(self, tid: int) -> None:
        waiting = self.outstanding.pop(tid, None)
        self._expired.append(tid)
        if waiting is not None and not waiting.answer.done():
            waiting.answer.set_exception(TimeoutError(f"no answer within {self.timeout_s} s"))

    def _fail_all(self, error: Exception) -> None:
        outstanding, self.outstanding = self.outstanding, {}
        self._queued.clear()
        self._buffer = b""
        for waiting in outstanding.values():
            waiting.timer.cancel()
            if not waiting.answer.done():
                waiting.answer.set_exception(error)
