"""A simulated Modbus PLC, for tests, benchmarks and the demo (``edgeloop sim modbus``).

It is pymodbus's own server (TCP, or RTU over a pseudo-terminal pair) answering from a
plain memory per unit id: holding registers, input registers, coils and discrete inputs,
``size`` of each. Faults are set per unit id and apply to every later request to it:

- ``delay_s``: answer that much later.
- ``timeout``: read the request, never answer.
- ``exception_code``: answer every request with this Modbus exception.
- ``garbage``: answer with random bytes as long as the real answer.
- ``disconnect``: close the connection when a request arrives (TCP); go silent (RTU).

A request for a unit id the PLC does not have is answered with exception 0x0B (gateway
target failed to respond) over TCP and not at all over RTU, as a real line would.

The server is stock pymodbus 3.16, with its limits: it decodes one request per read
from the connection and answers only that one, so of several requests that arrive
together (pipelined, in one TCP segment) the others wait unanswered in its buffer until
more bytes arrive. By default the simulator does not hide that. With ``pipelined`` (``edgeloop
sim modbus --pipelined``) it answers honestly what a gateway that accepts several
outstanding Modbus TCP transactions does: every request read from the connection is
answered, each with its own transaction id and its own ``delay_s``, so answers overlap
and may come out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore
from pymodbus.transport import ModbusProtocol

from edgeloop.drivers.modbus.codec import TABLE_OF_FUNCTION, Table

TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")
CHANGE_PERIOD_S = 0.1  # changing registers count up by one this often


@dataclass
class Faults:
    delay_s: float = 0.0
    timeout: bool = False
    exception_code: int | None = None
    garbage: bool = False
    disconnect: bool = False


NO_FAULTS = Faults()


class PlcMemory(SimCore):
    """The four tables of every unit id, as the pymodbus server reads and writes them.

    With ``changing``, holding and input registers count up once per
    ``CHANGE_PERIOD_S``: a register holds what was written plus the periods since, so
    nothing has to run in the background to make them move.
    """

    def __init__(
        self, unit_ids: Sequence[int], size: int, changing: bool, rng: random.Random
    ) -> None:
        self.size = size
        self.changing = changing
        self.started = time.monotonic()
        self.units: dict[int, dict[Table, list[Any]]] = {
            unit: {
                "holding": [rng.randrange(1 << 16) for _ in range(size)],
                "input": [rng.randrange(1 << 16) for _ in range(size)],
                "coil": [rng.random() < 0.5 for _ in range(size)],
                "discrete": [rng.random() < 0.5 for _ in range(size)],
            }
            for unit in unit_ids
        }

    def device_ids(self) -> list[int]:
        return list(self.units)

    def has(self, unit_id: int) -> bool:
        return unit_id in self.units

    def read(self, unit_id: int, table: Table, address: int, count: int) -> list[Any]:
        stored = self._slice(unit_id, table, address, count)
        shift = self._shift(table)
        return [(v + shift) & 0xFFFF for v in stored] if shift else stored

    def write(self, unit_id: int, table: Table, address: int, values: Sequence[Any]) -> None:
        cells = self.units[unit_id][table]
        self._check_range(address, len(values))
        if table in ("coil", "discrete"):
            cells[address : address + len(values)] = [bool(v) for v in values]
        else:
            shift = self._shift(table)
            cells[address : address + len(values)] = [(int(v) - shift) & 0xFFFF for v in values]

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = self._table(device_id, func_code)
        if not self._in_range(address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return self.read(device_id, table, address, count)

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        table = self._table(device_id, func_code)
        if not self._in_range(address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        self.write(device_id, table, address, values)
        return None

    def _table(self, unit_id: int, func_code: int) -> Table:
        if unit_id not in self.units:
            raise NoSuchIdException(f"no unit id {unit_id}")
        return TABLE_OF_FUNCTION[func_code]

    def _slice(self, unit_id: int, table: Table, address: int, count: int) -> list[Any]:
        self._check_range(address, count)
        return self.units[unit_id][table][address : address + count]

    def _shift(self, table: Table) -> int:
        if not self.changing or table not in ("holding", "input"):
            return 0
        return int((time.monotonic() - self.started) / CHANGE_PERIOD_S)

    def _in_range(self, address: int, count: int) -> bool:
        return address >= 0 and count >= 1 and address + count <= self.size

    def _check_range(self, address: int, count: int) -> None:
        if not self._in_range(address, count):
            raise IndexError(f"{count} values at {address} do not fit in {self.size}")


class _FaultyHandler(ServerRequestHandler):
    """pymodbus's handler of one connection, with the simulator's faults in its way."""

    def __init__(self, owner: ModbusBaseServer, simulator: PlcSimulator, serial: bool) -> None:
        super().__init__(owner, None, None, None)  # type: ignore[no-untyped-call]
        self.simulator = simulator
        self.serial = serial
        self._answering: set[asyncio.Future[None]] = set()  # pipelined answers under way

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        if not self.simulator.pipelined:
            return int(super().callback_data(data, addr))
        used = 0
        while used < len(data):
            try:
                length, pdu = self.framer.handleFrame(data[used:], 0, 0)
            except ModbusIOException:
                return int(super().callback_data(data[used:], addr)) + used  # its exception
            used += length
            if pdu is None:
                break  # the rest of a frame is still on its way
            answer = asyncio.ensure_future(self._answer(pdu, addr))
            self._answering.add(answer)
            answer.add_done_callback(self._answering.discard)
        return used

    async def handle_request(self) -> None:
        # Read once: a request that arrives while this one is delayed replaces last_pdu.
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is not None:
            await self._answer(pdu, addr)

    async def _answer(self, pdu: ModbusPDU, addr: tuple[str, int] | None) -> None:
        if not self.simulator.memory.has(pdu.dev_id):
            if not self.serial:
                self.pdu_send(
                    ExceptionResponse(
                        pdu.function_code,
                        ExcCodes.GATEWAY_NO_RESPONSE,
                        device_id=pdu.dev_id,
                        transaction=pdu.transaction_id,
                    ),
                    addr,
                )
            return
        self.simulator.requests_served += 1
        faults = self.simulator.faults_for(pdu.dev_id)
        if faults.disconnect:
            if not self.serial:
                self.close()
            return
        if faults.timeout:
            return
        if faults.delay_s > 0:
            await asyncio.sleep(faults.delay_s)
        response = await self._response(pdu, faults)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if not self.transport:  # the client left while the answer was delayed
            return
        if faults.garbage:
            length = len(self.framer.buildFrame(response))
            self.send(self.simulator.rng.randbytes(length), addr)
        else:
            self.pdu_send(response, addr)

    async def _response(self, pdu: ModbusPDU, faults: Faults) -> ModbusPDU:
        if faults.exception_code is not None:
            return ExceptionResponse(pdu.function_code, faults.exception_code)
        try:
            return await pdu.datastore_update(self.simulator.memory, pdu.dev_id)  # type: ignore[arg-type]
        except (AttributeError, KeyError):  # a function this PLC does not implement
            return ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_FUNCTION)


def _placeholder_device() -> SimDevice:
    """What the pymodbus server is built with; the PlcMemory replaces it right away."""
    return SimDevice(0, simdata=SimData(0, datatype=DataType.REGISTERS))


class _TcpServer(ModbusTcpServer):
    def __init__(self, simulator: PlcSimulator, host: str, port: int) -> None:
        super().__init__(_placeholder_device(), address=(host, port))
        self.context = simulator.memory
        self.simulator = simulator

    def callback_new_connection(self) -> _FaultyHandler:
        return _FaultyHandler(self, self.simulator, serial=False)


class _PtyServer(ModbusSerialServer):
    """RTU on the controlling end of a pty pair, which has no path pyserial could open."""

    def __init__(self, simulator: PlcSimulator, fd: int) -> None:
        self.fd = fd
        super().__init__(
            _placeholder_device(),
            framer=FramerType.RTU,
            port=f"pty:{fd}",
        )
        self.context = simulator.memory
        self.simulator = simulator
        self.call_create = self._open

    async def _open(self) -> tuple[asyncio.Transport, ModbusProtocol]:
        protocol = self.handle_new_connection()
        return _PtyTransport(self.loop, self.fd, protocol), protocol

    def callback_new_connection(self) -> _FaultyHandler:
        return _FaultyHandler(self, self.simulator, serial=True)


class _PtyTransport(asyncio.Transport):
    """Bytes in and out of a non-blocking pty fd (the simulator owns and closes the fd)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: ModbusProtocol) -> None:
        super().__init__()
        self.loop = loop
        self.fd = fd
        self.protocol = protocol
        self.closed = False
        loop.add_reader(fd, self._read_ready)
        loop.call_soon(protocol.connection_made, self)

    def _read_ready(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the line is gone: stop listening to it
            self.close()
            return
        if data:
            self.protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # A full pty buffer means nobody reads the line: the bytes are lost, as on a wire.
        with contextlib.suppress(OSError):
            os.write(self.fd, data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)


class PlcSimulator:
    """A PLC with several unit ids, each with holding registers, input registers, coils
    and discrete inputs of ``size`` cells, seeded with random values from ``seed``."""

    def __init__(
        self,
        unit_ids: Sequence[int] = (1,),
        size: int = 1000,
        changing: bool = False,
        seed: int = 0,
        pipelined: bool = False,
    ) -> None:
        if not unit_ids or not all(0 < unit <= 247 for unit in unit_ids):
            raise ValueError(f"unit ids must be 1..247, got {list(unit_ids)}")
        if not 1 <= size <= 65536:
            raise ValueError(f"size must be 1..65536, got {size}")
        self.rng = random.Random(seed)
        self.memory = PlcMemory(unit_ids, size, changing, self.rng)
        self.requests_served = 0  # requests received for a unit this PLC has
        self.pipelined = pipelined  # answer every request that arrives together (TCP)
        self._faults: dict[int, Faults] = {}
        self._servers: list[ModbusBaseServer] = []
        self._fds: list[int] = []

    def set_fault(self, unit_id: int, faults: Faults) -> None:
        """Faults for ``unit_id`` from now on; unit id 0 sets them for every unit."""
        if unit_id == 0:
            self._faults.clear()
        self._faults[unit_id] = faults

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults_for(self, unit_id: int) -> Faults:
        return self._faults.get(unit_id) or self._faults.get(0) or NO_FAULTS

    def write(self, unit_id: int, table: Table, address: int, values: Sequence[int | bool]) -> None:
        self.memory.write(unit_id, table, address, values)

    def read(self, unit_id: int, table: Table, address: int, count: int) -> list[Any]:
        return self.memory.read(unit_id, table, address, count)

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve Modbus TCP until ``stop()``; the port it listens on."""
        server = _TcpServer(self, host, port)
        if not await server.listen():
            raise OSError(f"cannot listen on {host}:{port}")
        self._servers.append(server)
        listener: Any = server.transport  # an asyncio.Server for a TCP listener
        return int(listener.sockets[0].getsockname()[1])

    async def serve_rtu(self) -> str:
        """Serve Modbus RTU on a new pty pair until ``stop()``; the path for the client."""
        controller, line = os.openpty()
        self._fds += [controller, line]
        # Raw: no echo, no line editing, every byte passed as it is, like a serial line.
        tty.setraw(line)
        os.set_blocking(controller, False)
        server = _PtyServer(self, controller)
        await server.listen()
        self._servers.append(server)
        # The simulator keeps ``line`` open too, so the pty lives on between clients.
        return os.ttyname(line)

    async def stop(self) -> None:
        for server in self._servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        self._servers.clear()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def _unit_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"unit ids must be numbers like 1,2: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """``edgeloop sim modbus``: a simulated PLC until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="edgeloop sim modbus", description="A simulated Modbus PLC (TCP, or RTU on a pty)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--units", type=_unit_ids, default=[1], help="unit ids, e.g. 1,2")
    parser.add_argument("--size", type=int, default=1000, help="cells per table per unit")
    parser.add_argument("--changing", action="store_true", help="registers count up")
    parser.add_argument("--rtu", action="store_true", help="serve RTU on a pty, not TCP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pipelined",
        action="store_true",
        help="answer every request of several sent together on a TCP connection",
    )
    args = parser.parse_args(argv)
    try:
        simulator = PlcSimulator(args.units, args.size, args.changing, args.seed, args.pipelined)
    except ValueError as err:
        parser.error(str(err))
    try:
        asyncio.run(_serve(simulator, args))
    except OSError as err:
        print(f"edgeloop sim modbus: {err}", file=sys.stderr)
        return 1
    return 0


async def _serve(simulator: PlcSimulator, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    units = ",".join(str(unit) for unit in args.units)
    if args.rtu:
        where = f"Modbus RTU on {await simulator.serve_rtu()}"
    else:
        where = f"Modbus TCP on {args.host}:{await simulator.serve_tcp(args.host, args.port)}"
    print(f"{where}, units {units}, {args.size} cells per table; Ctrl-C stops", flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
