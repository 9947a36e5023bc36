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


def _week(db: sqlite3.Connection, field: int) -> None:
    """A sample each 10 s for 7 days: value = seconds into its hour, one commit an hour."""
    for hour in range(7 * 24):
        start = T0 + hour * HOUR_US
        rows = [(field, start + s * 1_000_000, 0, float(s)) for s in range(0, 3600, 10)]
        store.write(db, rows)


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    return store.connect(tmp_path / "data.sqlite3", synchronous="normal")  # not a power test


def test_the_tiers_hold_count_mean_min_and_max_of_each_whole_minute_and_hour(
    db: sqlite3.Connection,
) -> None:
    (field,) = store.field_ids(db, ["tank1.TankLevel.level_m"]).values()
    _week(db, field)
    minutes = store.read(db, "tank1.TankLevel.level_m", T0, T0 + HOUR_US, "minute")
    assert len(minutes) == 60
    assert (minutes[1].t_us, minutes[1].value, minutes[1].low, minutes[1].high) == (
        T0 + MINUTE_US, 85.0, 60.0, 110.0,
    )  # fmt: skip
    hours = store.read(db, "tank1.TankLevel.level_m", T0, T0 + 7 * DAY_US, "hour")
    assert len(hours) == 7 * 24 - 1, "the last hour is not whole until a later sample comes"
    assert {(h.value, h.low, h.high) for h in hours} == {(1795.0, 0.0, 3590.0)}
    (n,) = db.execute("SELECT n FROM hour LIMIT 1").fetchone()
    assert n == 360


def test_retention_drops_each_tier_by_its_age(db: sqlite3.Connection) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    _week(db, field)
    now = T0 + 7 * DAY_US
    store.retain(db, Retention(raw_days=1, minute_days=3, hour_days=365), now)
    raw_first = db.execute("SELECT min(t_us) FROM raw").fetchone()[0]
    minute_first = db.execute("SELECT min(t_us) FROM minute").fetchone()[0]
    hour_first = db.execute("SELECT min(t_us) FROM hour").fetchone()[0]
    assert raw_first == now - DAY_US
    assert minute_first == now - 3 * DAY_US
    assert hour_first == T0, "a year of hours: the whole week is kept"


def test_retention_by_size_drops_the_oldest_raw_days_first(db: sqlite3.Connection) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    _week(db, field)
    before = store.size_bytes(db)
    limit = before // 2
    store.retain(db, Retention(raw_days=30, max_bytes=limit), T0 + 7 * DAY_US)
    assert store.size_bytes(db) <= limit
    raw_first = db.execute("SELECT min(t_us) FROM raw").fetchone()[0]
    assert raw_first >= T0 + DAY_US and (raw_first - T0) % DAY_US == 0
    assert db.execute("SELECT count(*) FROM hour").fetchone()[0] == 7 * 24 - 1, "tiers stay"


def test_a_reader_sees_what_is_committed_while_the_writer_holds_the_file(
    db: sqlite3.Connection, tmp_path: Path
) -> None:
    (field,) = store.field_ids(db, ["f"]).values()
    store.write(db, [(field, T0, 1, 1.0), (field, T0 + 10_000, 2, True)])
    reader = store.open_read_only(tmp_path / "data.sqlite3")
    points = store.read(reader, "f", T0, T0 + MINUTE_US)
    assert [(p.t_us, p.value) for p in points] == [(T0, 1.0), (T0 + 10_000, 1.0)]
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("DELETE FROM raw")
    assert store.read(reader, "no.such.field", T0, T0 + MINUTE_US) == []


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite3"
    store.connect(path).execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(store.SchemaError, match="schema version 99"):
        store.connect(path)
