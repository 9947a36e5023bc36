"""Io side of the data log: batches from the control process into the SQLite store.

The event loop only appends what arrives to a list; a writer thread swaps the list out
every ``flush_interval_s`` and commits it in one transaction (``store.write``), so the
loop never waits on the disk and a power cut loses at most one interval (the store's
``synchronous=full``). Retention runs in the same thread, every ``RETAIN_EVERY_S``.

What arrives while the writer is behind waits, up to ``MAX_PENDING_ROWS``; beyond, the
newest are dropped and counted (``dropped``), and the log says so, rate-limited.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from typing import Any

from edgeloop.data import store
from edgeloop.data.collect import TOPIC_BATCH
from edgeloop.data.config import DataLogConfig
from edgeloop.logs import every_power_of_ten
from edgeloop.realtime.heartbeat import IoSlot
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record

log = logging.getLogger("edgeloop.data")

MAX_PENDING_ROWS = 2_000_000  # ~20 s of the 100 000 samples/s the logger is built for
RETAIN_EVERY_S = 60.0
NAN = math.nan

Batch = tuple[int, list[Any]]  # t_us, [id, value, id, value, ...] (the control's ids)


class DataLogger:
    """The ``data_log`` section's io part."""

    def __init__(self, config: DataLogConfig, context: IoContext) -> None:
        self.config = config
        self.context = context
        self.path = config.database(context.state_dir)
        self.rows_written = 0
        self.commits = 0
        self.dropped = 0
        self.failed = False  # the store could not be opened, or its writer died
        self._batches: list[Batch] = []
        self._pending = 0  # samples in _batches
        self._names: list[tuple[int, str]] = []
        self._ignored: set[int] = set()  # ids declared for the uplinks only
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        context.on_topic(TOPIC_BATCH, self._on_batch)

    def _on_batch(self, record: Record) -> None:
        _, t_us, declared, flat = record.payload
        if self.failed:
            self._drop(len(flat) // 2)  # no store to write them to (said when it failed)
            return
        with self._lock:  # the writer swaps the lists out under it
            for ident, name, *logged in declared:
                # an uplink's field the data_log rules leave out (older peers: no flag)
                if logged and not logged[0]:
                    self._ignored.add(int(ident))
                else:
                    self._names.append((int(ident), str(name)))
            count = len(flat) // 2
            if self._pending + count > MAX_PENDING_ROWS:
                self._drop(count)
                return
            if count:
                self._batches.append((t_us, flat))
                self._pending += count

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._show_counts()
        if every_power_of_ten(self.dropped):
            log.warning("data log behind: %d samples dropped so far", self.dropped)

    def _show_counts(self) -> None:
        """The counts into this worker's heartbeat slots, for /metrics."""
        heartbeats, worker = self.context.heartbeats, self.context.worker
        heartbeats.set_io(worker, IoSlot.DATA_LOG_WRITTEN, self.rows_written)
        heartbeats.set_io(worker, IoSlot.DATA_LOG_DROPPED, self.dropped)

    async def start(self) -> None:
        try:
            db = store.connect(self.path, self.config.synchronous)
        except (OSError, sqlite3.Error, store.SchemaError) as error:
            # The rest of the appliance runs; the status line says what is missing.
            log.error("data log %s cannot be opened: %s; nothing is logged", self.path, error)
            self.context.degraded("data_log", f"{self.path}: {error}")
            self.failed = True
            return
        self._thread = threading.Thread(
            target=self._run, args=(db,), name="edgeloop-data-log", daemon=True
        )
        self._thread.start()
        log.info("data log: %s (flush every %g s)", self.path, self.config.flush_interval_s)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        log.info(
            "data log: %d samples written in %d commits, %d dropped",
            self.rows_written,
            self.commits,
            self.dropped,
        )

    def _run(self, db: sqlite3.Connection) -> None:
        ids: dict[int, int] = {}  # the control process's id -> the store's
        retention = self.config.retention.retention()
        next_retain = time.monotonic() + RETAIN_EVERY_S
        try:
            while True:
                stopping = self._stop.wait(self.config.flush_interval_s)
                self._flush(db, ids)
                if stopping:
                    return
                if time.monotonic() >= next_retain:
                    next_retain = time.monotonic() + RETAIN_EVERY_S
                    store.retain(db, retention, time.time_ns() // 1000)
        except sqlite3.Error as error:
            self.failed = True
            log.error("data log %s stopped: %s", self.path, error)
            self.context.degraded("data_log", f"{self.path}: {error}")
        finally:
            db.close()

    def _flush(self, db: sqlite3.Connection, ids: dict[int, int]) -> None:
        with self._lock:
            names, self._names = self._names, []
            batches, self._batches = self._batches, []
            self._pending = 0
            ignored = set(self._ignored)
        if names:
            by_name = store.field_ids(db, [name for _, name in names])
            ids.update((ident, by_name[name]) for ident, name in names)
        if not batches:
            return
        by_field: dict[int, store.Samples] = {}
        unknown = 0
        for t_us, flat in batches:
            for ident, value in zip(flat[0::2], flat[1::2], strict=True):
                field = ids.get(ident)
                if field is None:
                    if ident not in ignored:
                        unknown += 1  # never declared: a protocol fault, counted
                    continue
                samples = by_field.get(field)
                if samples is None:
                    samples = by_field[field] = store.Samples()
                samples.times.append(t_us)
                samples.values.append(NAN if value is None else value)
        if unknown:
            with self._lock:
                self._drop(unknown)
        self.rows_written += store.write(db, by_field)
        self.commits += 1
        self._show_counts()
