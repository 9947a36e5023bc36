"""The time-series store: one SQLite file in WAL mode, raw samples in chunks and two
downsampled tiers, retention by age and size. The io process's logger writes it;
``edgeloop query`` and the HTTP trends read it (WAL lets readers in while it commits).

Tables (docs/data.md has the format):

- ``fields(id, name)``: a logged field, ``entity.Component.field``.
- ``raw(field, t0_us, t1_us, n, times, vals)``: the samples of one field from one
  commit, as a chunk: ``times`` the µs after ``t0_us`` of each (int32, little-endian),
  ``vals`` the values (float64; NaN where the field held no finite number), both
  zlib-compressed. One row per field a flush instead of one per sample: at 100 000
  samples/s a row each costs SQLite more than the rest of the logger together.
- ``minute`` and ``hour`` ``(field, t_us, n, sum, min, max)``: the samples of each
  minute (hour) of each field; ``t_us`` its start. Rows merge on conflict (counts and
  sums add), so a minute spread over two commits, or over a restart, comes out whole.
- ``meta(key, value)``: the schema version.

Durability: WAL with ``synchronous=FULL`` by default, so each commit (one a flush
interval) is on the disk when it returns and a power cut loses at most the samples of
the last interval; ``NORMAL`` (fsync only at checkpoints) saves one fsync a flush but
may lose every commit since the last checkpoint. docs/data.md has the measured cost.
"""

from __future__ import annotations

import math
import sqlite3
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SCHEMA_VERSION = 1
MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
MAX_CHUNK_SPAN_US = (1 << 31) - 1  # the time offsets are int32

Synchronous = Literal["full", "normal"]
Resolution = Literal["raw", "minute", "hour"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS raw (
    field INTEGER NOT NULL, t0_us INTEGER NOT NULL, t1_us INTEGER NOT NULL,
    n INTEGER NOT NULL, times BLOB NOT NULL, vals BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_by_field ON raw (field, t1_us);
CREATE INDEX IF NOT EXISTS raw_by_time ON raw (t1_us);
CREATE TABLE IF NOT EXISTS minute (
    field INTEGER NOT NULL, t_us INTEGER NOT NULL, n INTEGER NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, PRIMARY KEY (field, t_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour (
    field INTEGER NOT NULL, t_us INTEGER NOT NULL, n INTEGER NOT NULL,
    sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL, PRIMARY KEY (field, t_us)
) WITHOUT ROWID;
"""
_MERGE = """INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (field, t_us) DO UPDATE SET n = n + excluded.n, sum = sum + excluded.sum,
    min = min(min, excluded.min), max = max(max, excluded.max)"""


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
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        db.close()
        raise SchemaError(f"{path}: schema version {row[0]}, this edgeloop reads {SCHEMA_VERSION}")
    return db


def open_read_only(path: Path) -> sqlite3.Connection:
    """The store at ``path`` for queries; ``FileNotFoundError`` if there is none."""
    if not path.exists():
        raise FileNotFoundError(f"no data log at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def field_ids(db: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """The id of each name, added to ``fields`` if new."""
    wanted = list(names)
    with _transaction(db):
        db.executemany("INSERT OR IGNORE INTO fields (name) VALUES (?)", [(n,) for n in wanted])
    chosen = set(wanted)
    return {n: i for i, n in db.execute("SELECT id, name FROM fields") if n in chosen}


class Samples:
    """The samples of one field for one commit, oldest first."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("q")
        self.values = array("d")

    def add(self, t_us: int, value: float | None) -> None:
        self.times.append(t_us)
        self.values.append(math.nan if value is None else float(value))


def write(db: sqlite3.Connection, by_field: dict[int, Samples]) -> int:
    """Append each field's samples as chunks and merge them into the tiers, in one
    transaction: one commit (one fsync under FULL) per call. The samples written."""
    raw: list[tuple[int, int, int, int, bytes, bytes]] = []
    minutes: list[tuple[int, int, int, float, float, float]] = []
    count = 0
    for field, samples in by_field.items():
        times, values = samples.times, samples.values
        if not times:
            continue
        count += len(times)
        raw += _chunks(field, times, values)
        minutes += _tier(field, times, values, MINUTE_US)
    hours = _hours(minutes)
    with _transaction(db):
        db.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, ?, ?)", raw)
        db.executemany(_MERGE.format(table="minute"), minutes)
        db.executemany(_MERGE.format(table="hour"), hours)
    return count


def _chunks(
    field: int, times: array[int], values: array[float]
) -> list[tuple[int, int, int, int, bytes, bytes]]:
    chunks = []
    start = 0
    while start < len(times):
        t0 = times[start]
        end = bisect_left(times, t0 + MAX_CHUNK_SPAN_US, lo=start)
        offsets = array("i", [t - t0 for t in times[start:end]])
        packed = zlib.compress(offsets.tobytes(), 1)
        vals = zlib.compress(values[start:end].tobytes(), 1)
        chunks.append((field, t0, times[end - 1], end - start, packed, vals))
        start = end
    return chunks


def _tier(
    field: int, times: array[int], values: array[float], span_us: int
) -> list[tuple[int, int, int, float, float, float]]:
    """(field, start, n, sum, min, max) of each ``span_us`` the finite values fall in."""
    rows = []
    start = 0
    while start < len(times):
        bucket = times[start] // span_us * span_us
        end = bisect_left(times, bucket + span_us, lo=start)
        finite = [v for v in values[start:end] if math.isfinite(v)]
        if finite:
            rows.append((field, bucket, len(finite), math.fsum(finite), min(finite), max(finite)))
        start = end
    return rows


def _hours(
    minutes: Sequence[tuple[int, int, int, float, float, float]],
) -> list[tuple[int, int, int, float, float, float]]:
    merged: dict[tuple[int, int], list[float]] = {}
    for field, t_us, n, total, low, high in minutes:
        key = (field, t_us // HOUR_US * HOUR_US)
        found = merged.get(key)
        if found is None:
            merged[key] = [n, total, low, high]
        else:
            found[0] += n
            found[1] += total
            found[2] = min(found[2], low)
            found[3] = max(found[3], high)
    return [(f, t, int(n), s, lo, hi) for (f, t), (n, s, lo, hi) in merged.items()]


class _transaction:  # noqa: N801 (used as a statement: with _transaction(db))
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def retain(db: sqlite3.Connection, retention: Retention, now_us: int) -> int:
    """Drop samples older than each tier keeps, then the oldest raw ones (a day at a
    time) while their pages take more than ``max_bytes``; the rows dropped. Freed pages
    are reused by the next inserts: the file stays at its high-water mark instead of
    being rewritten by a VACUUM (an SD card's wear)."""
    with _transaction(db):
        dropped = db.execute(
            "DELETE FROM raw WHERE t1_us < ?", (now_us - int(retention.raw_days * DAY_US),)
        ).rowcount
        for table, days in (("minute", retention.minute_days), ("hour", retention.hour_days)):
            cutoff = now_us - int(days * DAY_US)
            dropped += db.execute(f"DELETE FROM {table} WHERE t_us < ?", (cutoff,)).rowcount
        while size_bytes(db) > retention.max_bytes:
            oldest = db.execute("SELECT min(t1_us) FROM raw").fetchone()[0]
            if oldest is None:
                break
            cursor = db.execute("DELETE FROM raw WHERE t1_us < ?", (oldest + DAY_US,))
            dropped += cursor.rowcount
    return dropped


def size_bytes(db: sqlite3.Connection) -> int:
    """The bytes the database's pages in use take (without the WAL)."""
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
    if resolution != "raw":
        rows = db.execute(
            f"SELECT t_us, sum / n, min, max FROM {resolution} "
            "WHERE field = ? AND t_us >= ? AND t_us < ? ORDER BY t_us",
            (row[0], since_us, until_us),
        )
        return [Point(t, mean, low, high) for t, mean, low, high in rows]
    samples: list[tuple[int, float | None]] = []
    chunks = db.execute(
        "SELECT t0_us, times, vals FROM raw WHERE field = ? AND t1_us >= ? AND t0_us < ?",
        (row[0], since_us, until_us),
    )
    for t0, packed, vals in chunks:
        offsets = array("i", zlib.decompress(packed))
        values = array("d", zlib.decompress(vals))
        for offset, value in zip(offsets, values, strict=True):
            t = t0 + offset
            if since_us <= t < until_us:
                samples.append((t, value if math.isfinite(value) else None))
    # Sorted by time alone: samples of one time keep their order (a stable sort).
    samples.sort(key=lambda sample: sample[0])
    return [Point(t, value, value, value) for t, value in samples]


def raw_count(db: sqlite3.Connection, name: str, since_us: int, until_us: int) -> int:
    """How many raw samples of ``name`` the chunks overlapping ``[since_us, until_us)``
    hold: what a raw ``read`` would decode, known without decoding it."""
    row = db.execute(
        "SELECT coalesce(sum(n), 0) FROM raw JOIN fields ON raw.field = fields.id "
        "WHERE fields.name = ? AND t1_us >= ? AND t0_us < ?",
        (name, since_us, until_us),
    ).fetchone()
    return int(row[0])


def names(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM fields ORDER BY name")]
