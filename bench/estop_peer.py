"""The e-stop bench's Modbus TCP device: holding registers of zeros that reads answer,
and the arrival time and value of every write to one register.

It runs in a process of its own, forked before the bench starts any thread, and times
each write by the kernel's receive timestamp (``SO_TIMESTAMPNS``), not by when a
Python thread got round to reading it: what is measured is when the frame left the io
process and crossed loopback, without the bench's own scheduling and GIL in it. It
stands in for a PLC, a machine with its own CPU, so it runs above the io process
(``above_the_io_process``) where it may: a device slow to answer the poll under way
would otherwise hold the safe write behind it. The bench's press does the same. The
robot fleet, the load, gets no such help.

Timestamps are CLOCK_REALTIME (what ``SO_TIMESTAMPNS`` gives), so the bench takes its
press times from ``time.time()``; over the few ms measured, clock slewing is nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time

from edgeloop.realtime.rt_setup import die_with_parent

# <asm-generic/socket.h>: SO_TIMESTAMPNS_OLD (a struct timespec of two native longs);
# the socket module does not name it.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@ll")
BENCH_RT_PRIORITY = 20  # above the io process's default runtime.io_rt_priority (10)
MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 0x03, 0x06, 0x10
ILLEGAL_FUNCTION = 0x01
WRITE = struct.Struct("=dH")  # arrival (s, CLOCK_REALTIME), value: child -> bench
RECV_BYTES = 4096


class Peer:
    """The device process, and what it reports: ``writes`` to ``address``, each as
    (arrival in ``time.time()`` seconds, value); ``safe_raw`` is the safe value."""

    def __init__(self, address: int, safe_raw: int) -> None:
        self.address = address
        self.safe_raw = safe_raw
        self.writes: list[tuple[float, int]] = []
        self._written = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pid = 0
        self._reports = -1
        self._thread = threading.Thread(target=self._collect, name="peer-reports", daemon=True)

    def start(self) -> None:
        """Fork the device; call before this process starts any thread."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the device
            try:
                os.close(read_fd)
                die_with_parent(signal.SIGKILL, parent=parent)
                _serve(self._listener, write_fd, self.address)
            finally:
                os._exit(0)
        self._pid = pid
        os.close(write_fd)
        self._listener.close()
        self._reports = read_fd
        self._thread.start()

    def stop(self) -> None:
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = 0
        self._thread.join()
        os.close(self._reports)

    def _collect(self) -> None:
        pending = b""
        while data := os.read(self._reports, WRITE.size * 64):
            pending += data
            whole = len(pending) - len(pending) % WRITE.size
            with self._written:
                self.writes += WRITE.iter_unpack(pending[:whole])
                self._written.notify_all()
            pending = pending[whole:]

    def count(self) -> int:
        with self._written:
            return len(self.writes)

    def wait_write(self, since: int, safe: bool, timeout: float) -> float | None:
        """The arrival time of the first write from index ``since`` on that is the safe
        value (``safe``) or another one; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._written:
            while True:
                for arrived, value in self.writes[since:]:
                    if (value == self.safe_raw) == safe:
                        return arrived
                since = len(self.writes)
                left = deadline - time.monotonic()
                if left <= 0 or not self._written.wait(left):
                    return None


def above_the_io_process() -> int:
    """SCHED_FIFO BENCH_RT_PRIORITY for the calling thread (not for processes it starts
    later), where permitted; the priority got (0: none, an ordinary thread)."""
    policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(0, policy, os.sched_param(BENCH_RT_PRIORITY))
    except OSError:
        return 0
    return BENCH_RT_PRIORITY


def _serve(listener: socket.socket, reports: int, address: int) -> None:
    above_the_io_process()
    lock = threading.Lock()
    while True:
        connection, _ = listener.accept()
        threading.Thread(
            target=_answer_connection, args=(connection, reports, address, lock), daemon=True
        ).start()


def _answer_connection(
    connection: socket.socket, reports: int, address: int, lock: threading.Lock
) -> None:
    connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    with connection:
        while True:
            try:
                data, ancillary, _, _ = connection.recvmsg(
                    RECV_BYTES, socket.CMSG_SPACE(TIMESPEC.size)
                )
            except OSError:
                return
            if not data:
                return
            arrived = _arrival(ancillary)
            buffer += data
            answers = bytearray()
            while len(buffer) >= MBAP.size:
                tid, _, length, unit = MBAP.unpack_from(buffer)
                end = MBAP.size - 1 + length
                if len(buffer) < end:
                    break
                pdu = bytes(buffer[MBAP.size : end])
                del buffer[:end]
                answer, written = _answer(pdu, address)
                if written is not None:
                    with lock:
                        os.write(reports, WRITE.pack(arrived, written))
                answers += MBAP.pack(tid, 0, len(answer) + 1, unit) + answer
            with contextlib.suppress(OSError):
                connection.sendall(answers)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return time.time()


def _answer(pdu: bytes, address: int) -> tuple[bytes, int | None]:
    """The answer to ``pdu``, and the value it wrote to ``address`` (None: none)."""
    function = pdu[0]
    if function == READ_HOLDING:
        _, count = struct.unpack_from(">HH", pdu, 1)
        return bytes([function, 2 * count]) + bytes(2 * count), None
    if function == WRITE_SINGLE:
        start, value = struct.unpack_from(">HH", pdu, 1)
        return pdu[:5], value if start == address else None
    if function == WRITE_MULTIPLE:
        start, _ = struct.unpack_from(">HH", pdu, 1)
        (value,) = struct.unpack_from(">H", pdu, 6)
        return pdu[:5], value if start == address else None
    return bytes([function | 0x80, ILLEGAL_FUNCTION]), None
