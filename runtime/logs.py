"""Process logging: one line per event on stderr, readable by people and by journald."""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time

# Lines the control process holds while stderr is blocked (a stalled journal): past this
# they are dropped and counted, since holding more only delays the loss and costs memory.
BACKLOG_LINES = 1000
FLUSH_AT_EXIT_S = 1.0

# syslog priorities (RFC 5424), understood by journald as a "<N>" line prefix.
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        # journald stamps time and unit itself; multi-line tracebacks keep the prefix.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def every_power_of_ten(count: int) -> bool:
    """True for the 1st, 10th, 100th, ... occurrence: a fault repeating every tick stays
    visible without flooding the journal."""
    while count % 10 == 0:
        count //= 10
    return count == 1


class BackgroundWriter(logging.Handler):
    """A handler whose ``emit`` never blocks: it formats the line and queues it; a thread
    writes the queue to ``fd``.

    For the control process, where a blocking write to a slow journal would stall the
    tick. The thread does nothing but ``os.write`` (which releases the GIL), so it does
    not hold the interpreter against the loop. Lines past BACKLOG_LINES are dropped, and
    the count is written once the fd takes lines again.
    """

    def __init__(self, fd: int, backlog: int = BACKLOG_LINES) -> None:
        super().__init__()
        self.fd = fd
        self.backlog = backlog
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._queued = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._write_forever, name="log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode(errors="replace")
        except Exception:  # logging must not raise into the caller
            self.handleError(record)
            return
        with self._queued:
            if len(self._lines) >= self.backlog:
                self.dropped += 1
                return
            self._lines.append(line)
            self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float = FLUSH_AT_EXIT_S) -> None:
        """Wait (at most ``timeout``) until what is queued is written."""
        self._idle.wait(timeout)

    def close(self) -> None:
        self.flush()
        super().close()

    def _write_forever(self) -> None:
        dropped_told = 0
        while True:
            self._wake.wait()
            with self._queued:
                self._wake.clear()
                lines, self._lines = self._lines, collections.deque()
                dropped = self.dropped
            if dropped != dropped_told:
                # Lines are dropped only while the queue is full: after all it holds.
                lines.append(
                    f"{dropped - dropped_told} log lines dropped: stderr was blocked\n".encode()
                )
                dropped_told = dropped
            for line in lines:
                self._write(line)
            with self._queued:
                if not self._lines:
                    self._idle.set()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except InterruptedError:
                continue
            except BlockingIOError:
                time.sleep(0.01)  # a non-blocking fd that is full: this thread may wait
            except OSError:
                return  # the reader is gone; nothing to tell it


def setup_logging(level: str = "INFO", background: bool = False) -> None:
    """Log to stderr; with journald on the other end, as ``<priority>`` prefixed lines.

    ``background``: write from a thread (``BackgroundWriter``), so a call to ``log``
    never waits on stderr; for the control loop."""
    handler: logging.Handler
    handler = (
        BackgroundWriter(sys.stderr.fileno()) if background else logging.StreamHandler(sys.stderr)
    )
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs every connection and every HTTP answer at INFO: a line per page
    # load or trend poll, hundreds a second with a room of dashboards. edgeloop.net
    # logs each WebSocket session once; websockets' warnings and errors still show, and
    # all of it at DEBUG.
    quiet = root.level > logging.DEBUG
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level) if quiet else 0)
