"""The data log's SQLite store on a synthetic week, clock fast-forwarded: raw samples,
the minute and hour tiers, retention by age and by size, and reads from another
connection while the writer holds the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgeloop.data import store
from edgeloop.data.store import DAY_US, HOUR_US, MINUTE_US, Retention

T0 = 1_800_000_000 * 1_000_000 // HOUR_US * HOUR_US  # on an hour boundary


def _samples(pairs: list[tuple[int, float | None]]) -> store.Samples:
    samples = store.Samples()
    for t_us, value in pairs:
        samples.add(t_us, value)
    return samples


def _week(db: sqlite3.Connection, field: int) -> None:
    """A sample each 10 s from T0 + 35 s for 7 days, its value the seconds into its
    hour; one commit an hour, from :35 to :25 of the next, so each hour's first minute
    is split over two commits (the tiers merge it)."""
    for hour in range(7 * 24):
        start = hour * 3600 + 35
        pairs = [(T0 + s * 1_000_000, float(s % 3600)) for s in range(start, start + 3600, 10)]
        store.write(db, {field: _samples(pairs)})


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "data.sqlite3", synchronous="normal")  # not a power test


def test_the_tiers_hold_count_mean_min_and_max_of_each_whole_minute_and_hour(
    db: sqlite3.Connection,
) -> None:
    (field,) = store.field_ids(db, ["tank1.TankLevel.level_m"]).values()
    _week(db, field)
    minutes = store.read(db, "tank1.TankLevel.level_m", T0 + HOUR_US, T0 + 2 * HOUR_US, "minute")
    assert len(minutes) == 60
    first, second = minutes[0], minutes[1]
    assert (first.t_us, first.value, first.low, first.high) == (T0 + HOUR_US, 30.0, 5.0, 55.0)
    assert (second.t_us, second.value, second.low, second.high) == (
        T0 + HOUR_US + MINUTE_US, 90.0, 65.0, 115.0,
    )  # fmt: skip
    hours = store.read(db, "tank1.TankLevel.level_m", T0, T0 + 8 * DAY_US, "hour")
    assert len(hours) == 7 * 24 + 1, "the first and the last hour in part"
    assert {(h.value, h.low, h.high) for h in hours[1:-1]} == {(1800.0, 5.0, 3595.0)}
    counts = [n for (n,) in db.execute("SELECT n FROM hour ORDER BY t_us")]
    assert counts[0] == 357 and set(counts[1:-1]) == {360} and counts[-1] == 3
    raw = store.read(db, "tank1.TankLevel.level_m", T0 + HOUR_US, T0 + HOUR_US + MINUTE_US)
    assert [(p.t_us - T0 - HOUR_US, p.value) for p in raw] == [
        (s * 1_000_000, float(s)) for s in range(5, 60, 10)
    ], "raw samples come back from both commits' chunks, in order"


def _first_raw_us(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT min(t0_us) FROM raw").fetchone()[0])


def test_retention_drops_each_tier_by_its_age(db: sqlite3.Connection) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    _week(db, field)
    now = T0 + 7 * DAY_US
    store.retain(db, Retention(raw_days=1, minute_days=3, hour_days=365), now)
    # A chunk (one commit: an hour here) goes once its newest sample is too old.
    assert now - DAY_US - HOUR_US < _first_raw_us(db) <= now - DAY_US
    assert db.execute("SELECT min(t_us) FROM minute").fetchone()[0] == now - 3 * DAY_US
    assert db.execute("SELECT min(t_us) FROM hour").fetchone()[0] == T0, "a year of hours"


def test_retention_by_size_drops_the_oldest_raw_days_first(db: sqlite3.Connection) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    _week(db, field)
    limit = store.size_bytes(db) // 2
    store.retain(db, Retention(raw_days=30, max_bytes=limit), T0 + 7 * DAY_US)
    assert store.size_bytes(db) <= limit
    assert _first_raw_us(db) >= T0 + DAY_US, "whole days of the oldest raw samples went"
    assert db.execute("SELECT count(*) FROM hour").fetchone()[0] == 7 * 24 + 1, "tiers stay"


def test_a_reader_sees_what_is_committed_while_the_writer_holds_the_file(
    db: sqlite3.Connection, tmp_path: Path
) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    store.write(db, {field: _samples([(T0, 1.0), (T0 + 10_000, True), (T0 + 20_000, None)])})
    reader = store.open_read_only(tmp_path / "data.sqlite3")
    points = store.read(reader, "f", T0, T0 + MINUTE_US)
    assert [(p.t_us, p.value) for p in points] == [
        (T0, 1.0), (T0 + 10_000, 1.0), (T0 + 20_000, None),
    ]  # fmt: skip
    (minute,) = store.read(reader, "f", T0, T0 + MINUTE_US, "minute")
    assert (minute.value, minute.low, minute.high) == (1.0, 1.0, 1.0), "no value: not counted"
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("DELETE FROM raw")
    assert store.read(reader, "no.such.field", T0, T0 + MINUTE_US) == []


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite3"
    store.connect(path).execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(store.SchemaError, match="schema version 99"):
        store.connect(path)
