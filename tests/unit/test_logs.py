"""Logging from the control process: a stalled stderr never stalls the caller."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import threading
from collections.abc import Iterator

import pytest

from edgeloop import App, FixedUpdate, SensorInput, Time
from edgeloop.logs import BackgroundWriter, setup_logging
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.realtime.loop_stats import LoopStats

RUN_TIMEOUT_S = 30.0


def _full_pipe() -> tuple[int, int]:
    """A pipe whose write end would block: nobody has read what fills its buffer."""
    read_fd, write_fd = os.pipe()
    flags = fcntl.fcntl(write_fd, fcntl.F_GETFL)
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    for chunk in (b"x" * 4096, b"x"):  # 4 KiB writes are atomic: the last bytes one by one
        try:
            while True:
                os.write(write_fd, chunk)
        except BlockingIOError:
            pass
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags)  # blocking again, as stderr is
    return read_fd, write_fd


@pytest.fixture
def stalled() -> Iterator[tuple[int, logging.Logger, BackgroundWriter]]:
    read_fd, write_fd = _full_pipe()
    handler = BackgroundWriter(write_fd, backlog=50)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.stalled.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    yield read_fd, logger, handler
    logger.removeHandler(handler)
    os.close(read_fd)  # the writer thread's blocked write ends with EPIPE
    os.close(write_fd)


def _read_all_written(read_fd: int, handler: BackgroundWriter) -> bytes:
    """Read the pipe until the handler has written everything it queued."""
    chunks: list[bytes] = []
    written = threading.Event()

    def read() -> None:
        while True:
            readable, _, _ = select.select([read_fd], [], [], 0.05)
            if readable:
                chunks.append(os.read(read_fd, 65536))
            elif written.is_set():
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    handler.flush(RUN_TIMEOUT_S)
    written.set()
    reader.join(RUN_TIMEOUT_S)
    return b"".join(chunks)


def test_log_calls_return_while_stderr_is_blocked(
    stalled: tuple[int, logging.Logger, BackgroundWriter],
) -> None:
    read_fd, logger, handler = stalled
    done = threading.Event()

    def log_many() -> None:
        for i in range(500):
            logger.warning("line %d", i)
        done.set()

    threading.Thread(target=log_many, daemon=True).start()
    assert done.wait(RUN_TIMEOUT_S), "a log call blocked on the full pipe"
    # Kept: the backlog, twice at most (the writer holds the batch it is blocked on).
    assert handler.dropped >= 500 - 2 * 50

    out = _read_all_written(read_fd, handler)
    notices = re.findall(rb"(\d+) log lines dropped: stderr was blocked\n", out)
    kept = [int(n) for n in re.findall(rb"line (\d+)\n", out)]
    assert sum(int(n) for n in notices) == handler.dropped
    assert len(kept) + handler.dropped == 500
    assert kept[0] == 0
    assert kept == sorted(kept), "lines keep their order"


def test_a_stalled_stderr_does_not_stall_the_control_loop(
    stalled: tuple[int, logging.Logger, BackgroundWriter],
) -> None:
    _, logger, handler = stalled
    app = App(rate_hz=100)
    app.add_systems(
        FixedUpdate,
        lambda world: logger.warning("tick %d", world.resource(Time).tick),
        in_set=SensorInput,
    )
    loop = ControlLoop(app, spin_s=0.0002)
    finished = threading.Event()

    def run() -> None:
        loop.run(max_ticks=200)
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(RUN_TIMEOUT_S), "the loop stalled on a log write"
    loop.close()
    stats = app.world.resource(LoopStats)
    assert stats.lateness.count == 200
    assert handler.dropped > 100


def test_websockets_says_per_connection_lines_only_at_debug() -> None:
    """A line per HTTP answer and connection at INFO would flood the journal with a
    room of dashboards; its warnings stay, and everything shows at DEBUG."""
    websockets_log = logging.getLogger("websockets.server")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        assert not websockets_log.isEnabledFor(logging.INFO)
        assert websockets_log.isEnabledFor(logging.WARNING)
        setup_logging("ERROR")
        assert not websockets_log.isEnabledFor(logging.WARNING)
        setup_logging("DEBUG")
        assert websockets_log.isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger("websockets").setLevel(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)
