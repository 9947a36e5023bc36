"""The trend endpoint's reading of a real SQLite data log: the query's checks, the tier
picked for a span and a number of points, buckets with their min, max and mean, and a
read that neither waits for nor holds up the writer."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from edgeloop.data import store
from edgeloop.data.store import HOUR_US, MINUTE_US
from edgeloop.web import trend
from edgeloop.web.trend import BadQuery, TrendQuery, Trends, parse_query

T0 = 1_800_000_000 * 1_000_000 // HOUR_US * HOUR_US  # on an hour boundary
T0_S = T0 / 1e6
LEVEL = "tank1.TankLevel.level_m"


def _write(db: sqlite3.Connection, pairs: list[tuple[int, float | None]]) -> None:
    (field,) = store.field_ids(db, [LEVEL]).values()
    samples = store.Samples()
    for t_us, value in pairs:
        samples.add(t_us, value)
    store.write(db, {field: samples})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data.sqlite3"


@pytest.fixture
def db(path: Path) -> sqlite3.Connection:
    return store.connect(path, synchronous="normal")  # not a power test


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("", "field is missing"),
        ("since=1&until=2", "field is missing"),
        (f"field={LEVEL}&since=20&until=10", "since (20) must be before until (10)"),
        (f"field={LEVEL}&since=10&until=10", "must be before"),
        (f"field={LEVEL}&points=0", "points: 0 is not within 1..10000"),
        (f"field={LEVEL}&points=10001", "points: 10001 is not within 1..10000"),
        (f"field={LEVEL}&points=many", "'many' is not a whole number"),
        (f"field={LEVEL}&since=yesterday", "since: 'yesterday' is not a time"),
        (f"field={LEVEL}&until=nan", "until: 'nan' is not a time"),
        (f"field={LEVEL}&since=-5", "since: '-5' is not a time"),
        (f"field={LEVEL}&until=1e300", "until: '1e300' is not a time"),
        (f"field={LEVEL}&field=other", "field is given 2 times"),
        (f"field={LEVEL}&colour=red", "unknown parameter 'colour'"),
    ],
)
def test_a_bad_query_is_refused_saying_what_is_wrong(query: str, says: str) -> None:
    with pytest.raises(BadQuery) as refused:
        parse_query(query, now_s=T0_S)
    assert says in str(refused.value)


def test_a_query_defaults_to_the_last_hour_at_a_thousand_points() -> None:
    assert parse_query(f"field={LEVEL}", now_s=T0_S) == TrendQuery(
        LEVEL, T0 - HOUR_US, T0, trend.DEFAULT_POINTS
    )


def test_buckets_carry_the_min_max_and_mean_of_their_samples(db: sqlite3.Connection) -> None:
    # 100 Hz for 10 s, a value rising by 1 a sample; a NaN-only second at 5..6 s.
    pairs: list[tuple[int, float | None]] = [
        (T0 + i * 10_000, None if 500 <= i < 600 else float(i)) for i in range(1000)
    ]
    _write(db, pairs)
    query = TrendQuery(LEVEL, T0, T0 + 10_000_000, points=10)
    body = trend.trend(db, query)
    assert body["resolution"] == "raw"
    assert body["t"] == [T0_S + s for s in range(10)]
    assert body["min"] == [float(100 * s) if s != 5 else None for s in range(10)]
    assert body["max"] == [float(100 * s + 99) if s != 5 else None for s in range(10)]
    assert body["mean"] == [100 * s + 49.5 if s != 5 else None for s in range(10)]


def test_fewer_samples_than_points_come_as_they_are(db: sqlite3.Connection) -> None:
    _write(db, [(T0 + 1_500_000, 1.5), (T0 + 2_250_000, 2.25)])
    body = trend.trend(db, TrendQuery(LEVEL, T0, T0 + 10_000_000, points=100))
    assert body["t"] == [T0_S + 1.5, T0_S + 2.25]
    assert body["min"] == body["max"] == body["mean"] == [1.5, 2.25]


def test_empty_buckets_are_left_out(db: sqlite3.Connection) -> None:
    _write(db, [(T0 + i * 100_000, float(i)) for i in range(10)])  # the first second only
    _write(db, [(T0 + 9_000_000 + i * 100_000, float(i)) for i in range(10)])  # the last
    body = trend.trend(db, TrendQuery(LEVEL, T0, T0 + 10_000_000, points=10))
    assert body["t"] == [T0_S, T0_S + 9]
    assert len(body["min"]) == len(body["max"]) == len(body["mean"]) == 2


def test_the_tier_is_coarser_when_each_bucket_spans_a_minute_or_an_hour(
    db: sqlite3.Connection,
) -> None:
    _write(db, [(T0 + s * 1_000_000, float(s % 60)) for s in range(2 * 3600)])
    two_hours = (T0, T0 + 2 * HOUR_US)
    assert trend.tier_for(db, TrendQuery(LEVEL, *two_hours, points=1000)) == "raw"
    minutes = trend.trend(db, TrendQuery(LEVEL, *two_hours, points=60))
    assert minutes["resolution"] == "minute"
    assert len(minutes["t"]) == 60
    # Each bucket two minutes: the minute tier's whole-minute figures, exactly.
    assert set(minutes["min"]) == {0.0} and set(minutes["max"]) == {59.0}
    assert set(minutes["mean"]) == {29.5}
    week = (T0, T0 + 7 * 24 * HOUR_US)
    assert trend.tier_for(db, TrendQuery(LEVEL, *week, points=1000)) == "minute"
    assert trend.tier_for(db, TrendQuery(LEVEL, *week, points=100)) == "hour"


def test_raw_beyond_what_the_io_process_decodes_is_read_from_the_minute_tier(
    db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(db, [(T0 + i * 10_000, float(i)) for i in range(6000)])  # a minute at 100 Hz
    query = TrendQuery(LEVEL, T0, T0 + MINUTE_US, points=1000)
    assert trend.tier_for(db, query) == "raw"
    monkeypatch.setattr(trend, "MAX_RAW_SAMPLES", 5999)
    body = trend.trend(db, query)
    assert body["resolution"] == "minute"
    assert (body["min"], body["max"]) == ([0.0], [5999.0])


def test_the_answer_never_has_more_points_than_asked(db: sqlite3.Connection) -> None:
    _write(db, [(T0 + i * 7_919, math.sin(i)) for i in range(20_000)])
    for points in (1, 7, 333, 10_000):
        body = trend.trend(db, TrendQuery(LEVEL, T0, T0 + 20_000 * 7_919, points))
        assert 0 < len(body["t"]) <= points
        assert body["t"] == sorted(body["t"])


async def test_the_endpoints_answer_from_a_read_only_connection_while_the_writer_commits(
    db: sqlite3.Connection, path: Path
) -> None:
    _write(db, [(T0 + i * 1_000_000, float(i)) for i in range(10)])
    trends = Trends(path)
    try:
        assert await trends.fields() == (200, {"fields": [LEVEL]})
        db.execute("BEGIN IMMEDIATE")  # the writer in the middle of a commit
        db.execute("DELETE FROM raw")
        status, body = await trends.trend(f"field={LEVEL}&since={T0_S}&until={T0_S + 10}")
        assert status == 200, body
        assert body["mean"] == [float(i) for i in range(10)], "the last commit's samples"
        db.execute("COMMIT")
        reader = store.open_read_only(path)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM raw").fetchone() == (0,)
        _write(db, [(T0 + 20_000_000, 20.0)])  # a read transaction does not hold it up
        reader.execute("COMMIT")
        reader.close()
        assert (await trends.trend(f"field=nope&since={T0_S}&until={T0_S + 10}"))[0] == 400
        status, body = await trends.trend("field=x&points=0")
        assert (status, body["error"]) == (400, "points: 0 is not within 1..10000")
    finally:
        trends.close()


async def test_without_a_data_log_there_are_no_fields_and_no_trends(tmp_path: Path) -> None:
    for trends in (Trends(None), Trends(tmp_path / "never-written.sqlite3")):
        try:
            assert await trends.fields() == (200, {"fields": []})
            status, body = await trends.trend(f"field={LEVEL}")
            assert status == 400
            assert "nothing is logged yet" in body["error"]
        finally:
            trends.close()
