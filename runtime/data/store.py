"""The time-series store: one SQLite file in WAL mode, raw samples and two downsampled
tiers, retention by age and size. The io process's logger writes it; ``edgeloop query``
and the HTTP trends read it (WAL lets readers in while the writer commits).

Tables:

- ``fields(id, name)``: a logged field, ``entity.Component.field``.
- ``raw(field, t_us, tick, value)``: every logged change; ``t_us`` is the wall clock of
  the tick that produced it (µs since the epoch), ``tick`` the control tick.
- ``minute`` and ``hour`` ``(field, t_us, n, mean, min, max)``: the raw samples of each
  whole minute (hour) of each field: count, mean, min and max; ``t_us`` its start.
  ``hour`` is built from ``minute`` (means weighted by counts).
- ``meta(key, value)``: the schema version and how far each tier is built.

Durability: WAL with ``synchronous=FULL`` by default, so each commit (one a flush
interval) is on the disk when it returns and a power cut loses at most the samples of
the last interval; ``NORMAL`` (fsync only at checkpoints) saves one fsync a flush but
may lose every commit since the last checkpoint. docs/data.md has the measured cost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SCHEMA_VERSION = 1
MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

Synchronous = Literal["full", "normal"]
Resolution = Literal["raw", "minute", "hour"]
Sample = tuple[int, int, int, float | None]  # field id, t_us, tick, value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS raw (
    field INTEGER NOT NULL, t_us INTEGER NOT NULL, tick INTEGER NOT NULL, value REAL
);
CREATE INDEX IF NOT EXISTS raw_by_field_time ON raw (field, t_us);
CREATE INDEX IF NOT EXISTS raw_by_time ON raw (t_us);
CREATE TABLE IF NOT EXISTS minute (
    field INTEGER NOT NULL, t_us INTEGER NOT NULL, n INTEGER NOT NULL,
    mean REAL, min REAL, max REAL, PRIMARY KEY (field, t_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour (
    field INTEGER NOT NULL, t_us INTEGER NOT NULL, n INTEGER NOT NULL,
    mean REAL, min REAL, max REAL, PRIMARY KEY (field, t_us)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Retention:
    raw_days: float = 7.0
    minute_days: float = 90.0
    hour_days: float = 3650.0
    max_bytes: int = 1 << 30


class SchemaError(RuntimeError):
    """The file is not a data log of this version."""


def connect(path: Path, synchronous: Synchronous = "full") -> sqlite3.Connection:
    """The store at ``path`` for writing, created if missing (one writer at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.executescript(_SCHEMA)
    version = _meta(db, "schema_version")
    if version is None:
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    elif version != SCHEMA_VERSION:
        db.close()
        raise SchemaError(f"{path}: schema version {version}, this edgeloop reads {SCHEMA_VERSION}")
    return db


def open_read_only(path: Path) -> sqlite3.Connection:
    """The store at ``path`` for queries; ``FileNotFoundError`` if there is none."""
    if not path.exists():
        raise FileNotFoundError(f"no data log at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def _meta(db: sqlite3.Connection, key: str) -> int | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def _set_meta(db: sqlite3.Connection, key: str, value: int) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def field_ids(db: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """The id of each name, added to ``fields`` if new (call inside a transaction)."""
    db.executemany("INSERT OR IGNORE INTO fields (name) VALUES (?)", [(n,) for n in names])
    wanted = set(names)
    return {n: i for i, n in db.execute("SELECT id, name FROM fields") if n in wanted}


def write(db: sqlite3.Connection, samples: Sequence[Sample]) -> None:
    """Append ``samples`` and bring the tiers up to the newest whole minute, in one
    transaction: one commit (one fsync under FULL) per call."""
    db.execute("BEGIN")
    try:
        db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?)", samples)
        if samples:
            _downsample(db, max(s[1] for s in samples))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _downsample(db: sqlite3.Connection, newest_us: int) -> None:
    """Whole minutes (hours) before ``newest_us`` not in their tier yet. A sample that
    arrives for a minute already built (a late one) stays raw only."""
    minute_end = newest_us // MINUTE_US * MINUTE_US
    done = _meta(db, "minute_done_us")
    start = _first(db, "raw") if done is None else done
    if start is not None and start < minute_end:
        db.execute(
            f"""INSERT OR REPLACE INTO minute
            SELECT field, t_us / {MINUTE_US} * {MINUTE_US}, count(value), avg(value),
                   min(value), max(value)
            FROM raw WHERE t_us >= ? AND t_us < ? GROUP BY field, t_us / {MINUTE_US}""",
            (start, minute_end),
        )
        _set_meta(db, "minute_done_us", minute_end)
    hour_end = minute_end // HOUR_US * HOUR_US
    done = _meta(db, "hour_done_us")
    start = _first(db, "minute") if done is None else done
    if start is not None and start < hour_end:
        db.execute(
            f"""INSERT OR REPLACE INTO hour
            SELECT field, t_us / {HOUR_US} * {HOUR_US}, sum(n), sum(mean * n) / sum(n),
                   min(min), max(max)
            FROM minute WHERE t_us >= ? AND t_us < ? AND n > 0
            GROUP BY field, t_us / {HOUR_US}""",
            (start, hour_end),
        )
        _set_meta(db, "hour_done_us", hour_end)


def _first(db: sqlite3.Connection, table: str) -> int | None:
    row = db.execute(f"SELECT min(t_us) FROM {table}").fetchone()
    return None if row[0] is None else int(row[0])


def retain(db: sqlite3.Connection, retention: Retention, now_us: int) -> int:
    """Drop samples older than each tier keeps, then the oldest raw ones (a day at a
    time) while their pages take more than ``max_bytes``; the rows dropped. Freed pages
    are reused by the next inserts: the file stays at its high-water mark instead of
    being rewritten by a VACUUM (an SD card's wear)."""
    db.execute("BEGIN")
    try:
        dropped = _retain(db, retention, now_us)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return dropped


def _retain(db: sqlite3.Connection, retention: Retention, now_us: int) -> int:
    dropped = 0
    for table, days in (
        ("raw", retention.raw_days),
        ("minute", retention.minute_days),
        ("hour", retention.hour_days),
    ):
        cursor = db.execute(f"DELETE FROM {table} WHERE t_us < ?", (now_us - int(days * DAY_US),))
        dropped += cursor.rowcount
    while size_bytes(db) > retention.max_bytes:
        oldest = _first(db, "raw")
        if oldest is None:
            break
        cursor = db.execute("DELETE FROM raw WHERE t_us < ?", (oldest + DAY_US,))
        dropped += cursor.rowcount
    return dropped


def size_bytes(db: sqlite3.Connection) -> int:
    """The bytes the database's pages take (without the WAL)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


@dataclass(frozen=True, slots=True)
class Point:
    t_us: int
    value: float | None  # raw: the value; a tier: the mean
    low: float | None = None  # a tier's min (raw: the value)
    high: float | None = None  # a tier's max


def read(
    db: sqlite3.Connection,
    name: str,
    since_us: int,
    until_us: int,
    resolution: Resolution = "raw",
) -> list[Point]:
    """The points of field ``name`` in ``[since_us, until_us)``, oldest first."""
    row = db.execute("SELECT id FROM fields WHERE name = ?", (name,)).fetchone()
    if row is None:
        return []
    if resolution == "raw":
        rows = db.execute(
            "SELECT t_us, value FROM raw WHERE field = ? AND t_us >= ? AND t_us < ? ORDER BY t_us",
            (row[0], since_us, until_us),
        )
        return [Point(t, v, v, v) for t, v in rows]
    rows = db.execute(
        f"SELECT t_us, mean, min, max FROM {resolution} "
        "WHERE field = ? AND t_us >= ? AND t_us < ? ORDER BY t_us",
        (row[0], since_us, until_us),
    )
    return [Point(t, mean, low, high) for t, mean, low, high in rows]


def names(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM fields ORDER BY name")]
