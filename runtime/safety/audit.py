"""The audit log: every command, safety event and alarm transition, in a file that
survives a power cut and shows a removed or changed entry.

``AuditLog`` is a resource of the control process. Its 100 Hz tick must never wait on a
disk, so ``append`` only puts ``(wall time, event, fields)`` on a bounded queue (1-3 µs
warm here; building and hashing the line costs 10-15 µs, so that is the writer's job).
It does not wake the writer either: waking a sleeping thread cost the caller ~20 µs
(p99 ~70 µs) on this VM, so the writer looks at the queue every ``POLL_S`` instead, and
an entry is durable within POLL_S plus one fdatasync. When the queue is full the entry
is dropped and counted, and the next write records an ``audit.dropped`` entry: a loss
is itself in the log.

A writer thread drains the queue, appends the lines to ``<state_dir>/audit.jsonl``
(opened ``O_APPEND``) and calls ``fdatasync`` once per drain, however many entries it
took. fdatasync, not fsync: an append changes the file's size, which fdatasync flushes
because reading the data back needs it; it skips only the mtime update. The file's
directory is fsynced once, when the file is created. ``flush`` waits until everything
appended before it is durable (shutdown, tests). An flock keeps a second process from
interleaving its own chain into the file.

The writer shares the interpreter with the tick. It turns at most ``CHUNK_ENTRIES``
entries into lines before a ``write`` (which lets go of the GIL), so a burst holds the
tick up by a chunk (~0.5 ms), not the whole queue; and it drops a SCHED_FIFO it
inherited, so the tick always preempts it. Its stack is small because
the control process mlockall(MCL_FUTURE)s every new mapping: a default 8 MB thread
stack would be 8 MB of locked RAM.

On open, a torn last line (a power cut mid-write) is cut off and ``audit.recovered``
records how many bytes went; the chain continues from the entry before it. Anything else
wrong in the file is left as it is for ``verify`` to report (audit_chain.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeloop.safety.audit_chain import (
    FILE_NAME,
    AuditError,
    VerifyResult,
    entry_line,
    read_head,
    verify,
)

__all__ = ["FILE_NAME", "AuditError", "AuditLog", "VerifyResult", "verify"]

log = logging.getLogger("edgeloop.audit")

QUEUE_CAPACITY = 4096  # entries waiting for the writer: minutes of commands, ~1 MB at most
POLL_S = 0.010  # the writer's look at the queue: one tick of waiting at most
CHUNK_ENTRIES = 32  # entries made into lines between two writes (each ~15 µs of GIL)
WRITER_STACK_BYTES = 256 * 1024
RETRY_S = 1.0  # after a failed write or sync, before the next try
RESERVED = frozenset({"seq", "time", "event", "prev", "hash"})

_Queued = tuple[int, str, dict[str, object]] | threading.Event  # an Event: a flush waits


class AuditLog:
    """Resource: ``append`` entries from any thread; a writer thread makes them durable."""

    def __init__(
        self,
        path: Path,
        *,
        capacity: int = QUEUE_CAPACITY,
        sync: Callable[[int], None] = os.fdatasync,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self._capacity = capacity
        self._sync = sync
        self._clock = clock
        self._queue: deque[_Queued] = deque()
        self._wake = threading.Event()  # the writer at once (flush, close), not at POLL_S
        self._closed = False
        self._dropped = 0
        self._dropped_recorded = 0
        self._drop_lock = threading.Lock()
        self._durable = 0
        self._second: tuple[int, str] = (-1, "")  # the writer's last formatted second
        self.last_error: str | None = None
        self._fd = _open_exclusive(path)
        try:
            head = read_head(self._fd)
            if head.torn:
                os.ftruncate(self._fd, head.length)
                sync(self._fd)
        except (OSError, AuditError) as error:
            os.close(self._fd)
            raise AuditError(f"{path}: {error}") from error
        self._seq, self._prev = head.next_seq, head.prev
        if head.torn:
            log.warning("%s: cut a torn last line of %d bytes", path, head.torn)
            self.append("audit.recovered", dropped_bytes=head.torn)
        self._writer = _start_thread(self._run, f"audit-writer {path.name}")

    @classmethod
    def open(cls, state_dir: Path, **options: Any) -> AuditLog:
        """The audit log of ``state_dir`` (created if missing), continuing its chain."""
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(state_dir / FILE_NAME, **options)

    def append(self, event: str, **fields: object) -> bool:
        """Queue an entry; False (and counted in ``dropped``) if the queue is full or the
        log closed. Fields are small JSON values; ``tick=`` stamps the control tick."""
        if not RESERVED.isdisjoint(fields):
            raise ValueError(f"audit fields {sorted(RESERVED & fields.keys())} are reserved")
        if self._closed or len(self._queue) >= self._capacity:
            with self._drop_lock:
                self._dropped += 1
            return False
        self._queue.append((self._clock(), event, fields))
        return True

    @property
    def dropped(self) -> int:
        """Entries refused because the queue was full (or the log closed)."""
        return self._dropped

    @property
    def durable(self) -> int:
        """Entries this log has written and synced since it opened."""
        return self._durable

    def flush(self, timeout_s: float) -> bool:
        """Wait until every entry appended before this call is durable; False on timeout
        (or when the writer cannot write: ``last_error`` says why)."""
        if not self._writer.is_alive():
            return False
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what is queued, stop the writer and close the file; False if the writer
        did not finish within ``timeout_s`` (the file stays open then, for it)."""
        self._closed = True
        self._wake.set()
        self._writer.join(timeout_s)
        if self._writer.is_alive():
            return False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        return True

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        _leave_realtime()
        while True:
            self._wake.wait(POLL_S)
            self._wake.clear()
            closing = self._closed
            if self._queue:
                self._drain()
            if closing and not self._queue:
                return

    def _drain(self) -> None:
        taken = [self._queue.popleft() for _ in range(len(self._queue))]
        # Read after the take: every drop counted so far came after the entries taken
        # (the queue only empties here), so its record goes after them.
        dropped = self._dropped - self._dropped_recorded
        waiting: list[threading.Event] = []
        lines: list[bytes] = []
        written, whole = 0, True
        for item in taken:
            if isinstance(item, threading.Event):
                waiting.append(item)
                continue
            lines.append(self._line(*item))
            if len(lines) == CHUNK_ENTRIES:
                written += len(lines)
                whole = self._write(lines) and whole
        if dropped:
            self._dropped_recorded += dropped
            lines.append(self._line(self._clock(), "audit.dropped", {"count": dropped}))
        written += len(lines)
        whole = self._write(lines) and whole
        if not (whole and (written == 0 or self._synced())):
            return
        self._durable += written
        for done in waiting:
            done.set()

    def _line(self, time_ns: int, event: str, fields: dict[str, object]) -> bytes:
        entry = {**fields, "seq": self._seq, "time": self._iso(time_ns), "event": event}
        entry["prev"] = self._prev
        try:
            line, self._prev = entry_line(entry)
        except (ValueError, RecursionError) as error:  # a field JSON cannot hold (a cycle)
            kept = {key: entry[key] for key in (*RESERVED, "tick") if key in entry}
            line, self._prev = entry_line({**kept, "unrecordable": str(error)})
        self._seq += 1
        return line

    def _iso(self, time_ns: int) -> str:
        seconds, ns = divmod(time_ns, 1_000_000_000)
        if self._second[0] != seconds:
            self._second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        return f"{self._second[1]}.{ns // 1000:06d}Z"

    def _write(self, lines: list[bytes]) -> bool:
        """Append ``lines`` (then emptied), retrying a failed write until it goes or the
        log closes; False if they were given up."""
        data = memoryview(b"".join(lines))
        lines.clear()
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except OSError as error:
                if not self._failed("write", error):
                    return False
        return True

    def _synced(self) -> bool:
        while True:
            try:
                self._sync(self._fd)
                self.last_error = None
                return True
            except OSError as error:
                if not self._failed("sync", error):
                    return False

    def _failed(self, what: str, error: OSError) -> bool:
        """Note a failed write or sync; True to try again (after RETRY_S), False when
        the log is closing and the entries are given up."""
        text = f"{self.path}: {what} failed: {error}"
        if text != self.last_error:
            log.error("%s", text)
            self.last_error = text
        if self._closed:
            return False
        time.sleep(RETRY_S)
        return True


def _open_exclusive(path: Path) -> int:
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditError(f"{path}: another process is writing this audit log") from None
    if created:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return fd


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    previous = threading.stack_size(WRITER_STACK_BYTES)
    try:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
    finally:
        threading.stack_size(previous)
    return thread


def _leave_realtime() -> None:
    """Run this thread as an ordinary one: a thread started after the control process
    went SCHED_FIFO inherits it (lowering needs no privilege)."""
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
