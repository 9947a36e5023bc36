"""The PostgreSQL/TimescaleDB sink: the io part of the ``postgres`` section.

Every ``flush_interval_s`` what came from the change feed (``data.batch``: the fields
the data log collects that ``fields`` matches) is written with one COPY, in one
transaction, to ``table`` (``time timestamptz, appliance text, field text, value double
precision``). The table is made at the first connect: a TimescaleDB hypertable when
the database has that extension, else a plain table with an index on (field, time).

While the database is away (or refuses), the rows go to the same bounded SQLite
backlog as the Sparkplug node's (``edgeloop.uplink.backlog``), and after a reconnect
(backoff ``reconnect_min_s`` doubling to ``reconnect_max_s``) the backlog is written
first, in order. A batch is taken from the backlog once its COPY has committed; a
connection lost between the commit and its answer sends that batch again, so a row
may be there twice (the same time, field and value), never not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from edgeloop.data.collect import TOPIC_BATCH
from edgeloop.drivers.health import Backoff
from edgeloop.logs import every_power_of_ten
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record
from edgeloop.uplink.backlog import Backlog, Change
from edgeloop.uplink.postgres_config import PostgresConfig

log = logging.getLogger("edgeloop.postgres")

SOURCE = "postgres"
FIELD_KEY = "field:"  # the backlog's numbering of field names, kept across restarts
BACKLOG_READ = 20_000  # rows written from the backlog per COPY
STOP_S = 10.0


def _time(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us / 1e6, tz=UTC)


class PostgresSink:
    def __init__(self, config: PostgresConfig, context: IoContext) -> None:
        self.config = config
        self.context = context
        self.appliance = config.appliance or context.server_name
        self.names: list[str] = []  # by the backlog's numbering
        self._numbers: dict[str, int] = {}
        self._ids: dict[int, int] = {}  # the control process's id -> number
        self.outbox: list[Change] = []
        self.backlog: Backlog | None = None
        self.rows_written = 0
        self.commits = 0
        self.dropped = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._named: list[tuple[str, int]] = []  # new numbers, for the backlog
        context.on_topic(TOPIC_BATCH, self._on_batch)

    def _on_batch(self, record: Record) -> None:
        _, t_us, declared, flat = record.payload
        for ident, name, *_ in declared:
            if self.config.stores(name):
                self._ids[int(ident)] = self._number(str(name))
        ids = self._ids
        append = self.outbox.append
        for ident, value in zip(flat[0::2], flat[1::2], strict=True):
            number = ids.get(ident)
            if number is not None:
                append((number, t_us, value, None))

    def _number(self, name: str) -> int:
        number = self._numbers.get(name)
        if number is None:
            number = self._numbers[name] = len(self.names)
            self.names.append(name)
            self._named.append((name, number))
        return number

    async def start(self) -> None:
        path = self.config.backlog(self.context.state_dir)
        try:
            self.backlog = await asyncio.to_thread(Backlog, path, self.config.max_changes)
        except (OSError, sqlite3.Error) as error:
            log.error("postgres backlog %s cannot be opened: %s; rows written only while "
                      "the database answers", path, error)  # fmt: skip
            self.context.degraded(f"{SOURCE}.backlog", f"{path}: {error}")
        else:
            known = sorted(self.backlog.keys(FIELD_KEY).items(), key=lambda item: item[1])
            restored = [name for name, _ in known]
            fresh, self.names = self.names, restored
            self._numbers = {name: number for number, name in enumerate(restored)}
            renumber = {old: self._number(name) for old, name in enumerate(fresh)}
            self._ids = {ident: renumber[number] for ident, number in self._ids.items()}
            self.outbox = [(renumber[n], t, v, q) for n, t, v, q in self.outbox]
            self._named = [(name, number) for name, number in self._named
                           if name not in restored]  # fmt: skip
        self._task = asyncio.create_task(self._run(), name="postgres-sink")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._spool()
        if self.backlog is not None:
            waiting = self.backlog.count
            self.backlog.close()
            log.info("postgres: %d rows written in %d commits, %d waiting, %d dropped",
                     self.rows_written, self.commits, waiting, self.dropped)  # fmt: skip

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while not self._stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.config.conninfo, connect_timeout=self.config.connect_timeout_s
                ) as db:
                    await self._prepare(db)
                    backoff.reset()
                    self.context.degraded(SOURCE, None)
                    await self._write_while_connected(db)
                    return
            except (psycopg.Error, OSError) as error:
                if every_power_of_ten(backoff.attempts + 1):
                    log.warning("postgres: %s; rows wait in the backlog",
                                str(error).strip() or type(error).__name__)  # fmt: skip
                self.context.degraded(SOURCE, str(error).strip().splitlines()[0] if str(error)
                                      else type(error).__name__)  # fmt: skip
            await self._spool()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff.next_delay())

    async def _prepare(self, db: psycopg.AsyncConnection[Any]) -> None:
        table = sql.Identifier(self.config.table)
        await db.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (time timestamptz NOT NULL, "
                "appliance text NOT NULL, field text NOT NULL, value double precision)"
            ).format(table)
        )
        found = await db.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        if await found.fetchone() is not None:
            await db.execute(
                "SELECT create_hypertable(%s, 'time', if_not_exists => TRUE)",
                (self.config.table,),
            )
        else:
            index = sql.Identifier(f"{self.config.table}_field_time")
            await db.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (field, time)").format(index, table)
            )
        await db.commit()

    async def _write_while_connected(self, db: psycopg.AsyncConnection[Any]) -> None:
        while True:
            stopping = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.flush_interval_s)
                stopping = True
            await self._drain(db)
            changes, self.outbox = self.outbox, []
            try:
                await self._copy(db, changes)
            except BaseException:
                self.outbox[:0] = changes
                raise
            if stopping:
                return

    async def _drain(self, db: psycopg.AsyncConnection[Any]) -> None:
        if self.backlog is None:
            return
        while self.backlog.count:
            rows = await asyncio.to_thread(self.backlog.head, BACKLOG_READ)
            if not rows:
                return
            await self._copy(db, [(m, t, v, q) for _, m, t, v, q in rows])
            last = rows[-1][0]
            await asyncio.to_thread(self.backlog.remove_through, last)

    async def _copy(self, db: psycopg.AsyncConnection[Any], changes: Sequence[Change]) -> None:
        if not changes:
            return
        names, appliance = self.names, self.appliance
        statement = sql.SQL("COPY {} (time, appliance, field, value) FROM STDIN").format(
            sql.Identifier(self.config.table)
        )
        async with db.cursor() as cursor, cursor.copy(statement) as copy:
            for number, t_us, value, _ in changes:
                row = (_time(t_us), appliance, names[number], None if value is None else value)
                await copy.write_row(row)
        await db.commit()
        self.rows_written += len(changes)
        self.commits += 1

    async def _spool(self) -> None:
        changes, self.outbox = self.outbox, []
        backlog = self.backlog
        if backlog is None:
            self._drop(len(changes))
            return
        named, self._named = self._named, []
        try:
            dropped = await asyncio.to_thread(_store, backlog, named, changes)
        except sqlite3.Error as error:
            log.error("postgres backlog: %s", error)
            dropped = len(changes)
        if dropped:
            self._drop(dropped)

    def _drop(self, count: int) -> None:
        if not count:
            return
        self.dropped += count
        if every_power_of_ten(self.dropped):
            log.error("postgres: %d rows dropped so far (backlog full or missing)", self.dropped)


def _store(backlog: Backlog, named: list[tuple[str, int]], changes: list[Change]) -> int:
    for name, number in named:
        backlog.put(FIELD_KEY + name, number)
    return backlog.append(changes)
