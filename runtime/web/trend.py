"""``/api/trend`` and ``/api/fields``: the data log's fields, decimated for a chart.

``GET /api/trend?field=NAME&since=S&until=S&points=N`` (unix seconds; ``until`` defaults
to now, ``since`` to an hour before it, ``points`` to 1 000, at most 10 000) answers
``{"field", "resolution", "t", "min", "max", "mean"}`` with at most ``points`` points,
so a browser never gets more points than it has pixels:

- The tier is picked by the span as ``edgeloop query`` picks it, then made coarser
  where that loses nothing a chart could show (each of the ``points`` buckets spans a
  minute, or an hour, anyway), and where raw would mean decoding more than
  ``MAX_RAW_SAMPLES`` in the io process.
- What the tier holds is bucketed into ``points`` equal slices of ``[since, until)``,
  each with the min, the max and the mean of its samples (a tier's mean: the mean of
  its rows' means); a slice without samples is left out, one whose samples held no
  number comes out as nulls (a gap). Fewer samples than ``points`` come out as they are.

The data log belongs to the io process's logger; queries read it through a read-only
connection (``store.open_read_only``; WAL lets them in while it commits, and they never
hold it up), on a thread of their own, one query at a time, so the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from edgeloop.data import store
from edgeloop.data.query_cli import resolution_for

DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
DEFAULT_SPAN_S = 3600.0
LATEST_S = 1e11  # the year 5138: later is a typo, and would not fit SQLite's integers
# Raw chunks are decoded in Python, a few µs a sample: 20 000 is ~0.1 s of the io
# process's CPU; more than that is read from the minute tier.
MAX_RAW_SAMPLES = 20_000


class BadQuery(ValueError):
    """What is wrong with a trend query, for the 400 answer."""


@dataclass(frozen=True, slots=True)
class TrendQuery:
    field: str
    since_us: int
    until_us: int
    points: int


@dataclass(frozen=True, slots=True)
class Series:
    t: list[float]  # unix s: a sample's time, or the start of its bucket
    low: list[float | None]
    high: list[float | None]
    mean: list[float | None]


def parse_query(query: str, now_s: float) -> TrendQuery:
    """The query string of ``/api/trend``; ``BadQuery`` saying what is wrong."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise BadQuery(f"not a query string: {query!r}") from None
    unknown = sorted(set(params) - {"field", "since", "until", "points"})
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}: field, since, until, points")
    field = _one(params, "field")
    if not field:
        raise BadQuery("field is missing: /api/fields lists the logged fields")
    until = _seconds(params, "until", now_s)
    since = _seconds(params, "since", until - DEFAULT_SPAN_S)
    if since >= until:
        raise BadQuery(f"since ({since:g}) must be before until ({until:g})")
    points_text = _one(params, "points")
    try:
        points = DEFAULT_POINTS if points_text is None else int(points_text)
    except ValueError:
        raise BadQuery(f"points: {points_text!r} is not a whole number") from None
    if not 1 <= points <= MAX_POINTS:
        raise BadQuery(f"points: {points} is not within 1..{MAX_POINTS}")
    return TrendQuery(field, int(since * 1e6), int(until * 1e6), points)


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadQuery(f"{name} is given {len(values)} times")
    return values[0]


def _seconds(params: dict[str, list[str]], name: str, default: float) -> float:
    text = _one(params, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is not a time in unix seconds") from None
    if not math.isfinite(value) or not 0 <= value <= LATEST_S:
        raise BadQuery(f"{name}: {text!r} is not a time in unix seconds")
    return value


def tier_for(db: sqlite3.Connection, query: TrendQuery) -> store.Resolution:
    """The tier to read ``query`` from: see the module docstring."""
    chosen = resolution_for("auto", query.since_us, query.until_us)
    bucket_us = (query.until_us - query.since_us) / query.points
    if chosen == "raw" and (
        bucket_us >= store.MINUTE_US
        or store.raw_count(db, query.field, query.since_us, query.until_us) > MAX_RAW_SAMPLES
    ):
        chosen = "minute"
    if chosen == "minute" and bucket_us >= store.HOUR_US:
        chosen = "hour"
    return chosen


def decimate(points: list[store.Point], query: TrendQuery) -> Series:
    """At most ``query.points`` points: buckets of equal span with their min, max, mean."""
    if len(points) <= query.points:
        return Series(
            [p.t_us / 1e6 for p in points],
            [p.low for p in points],
            [p.high for p in points],
            [p.value for p in points],
        )
    series = Series([], [], [], [])
    since, span, most = query.since_us, query.until_us - query.since_us, query.points
    bucket, low, high, total, n = -1, math.inf, -math.inf, 0.0, 0
    for point in points:
        index = min((point.t_us - since) * most // span, most - 1)
        if index != bucket:
            if bucket >= 0:
                _close_bucket(series, since + bucket * span // most, (low, high, total, n))
            bucket, low, high, total, n = index, math.inf, -math.inf, 0.0, 0
        if point.value is not None:
            low = min(low, point.value if point.low is None else point.low)
            high = max(high, point.value if point.high is None else point.high)
            total += point.value
            n += 1
    if bucket >= 0:
        _close_bucket(series, since + bucket * span // most, (low, high, total, n))
    return series


def _close_bucket(series: Series, start_us: int, figures: tuple[float, float, float, int]) -> None:
    low, high, total, n = figures
    series.t.append(start_us / 1e6)
    series.low.append(low if n else None)
    series.high.append(high if n else None)
    series.mean.append(total / n if n else None)


def trend(db: sqlite3.Connection, query: TrendQuery) -> dict[str, Any]:
    """The body of a ``/api/trend`` answer; ``BadQuery`` for a field never logged."""
    if query.field not in store.names(db):
        raise BadQuery(f"unknown field {query.field!r}: /api/fields lists the logged fields")
    tier = tier_for(db, query)
    series = decimate(store.read(db, query.field, query.since_us, query.until_us, tier), query)
    return {
        "field": query.field,
        "resolution": tier,
        "t": series.t,
        "min": series.low,
        "max": series.high,
        "mean": series.mean,
    }


Answer = tuple[int, dict[str, Any]]  # the HTTP status and the JSON body


class Trends:
    """The two endpoints over the data log at ``path`` (None: none is configured)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeloop-trend")

    async def fields(self) -> Answer:
        return await self._run(lambda db: (200, {"fields": store.names(db)}), _no_fields)

    async def trend(self, query_string: str) -> Answer:
        try:
            query = parse_query(query_string, time.time())
        except BadQuery as error:
            return 400, {"error": str(error)}
        return await self._run(lambda db: (200, trend(db, query)), _no_trend)

    async def _run(
        self, answer: Callable[[sqlite3.Connection], Answer], missing: Callable[[str], Answer]
    ) -> Answer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._answer, answer, missing)

    def _answer(
        self, answer: Callable[[sqlite3.Connection], Answer], missing: Callable[[str], Answer]
    ) -> Answer:
        """On the reader thread: ``answer(db)`` with a connection of its own."""
        if self.path is None:
            return missing("no data_log section in the config")
        try:
            db = store.open_read_only(self.path)
        except FileNotFoundError as error:
            return missing(str(error))
        try:
            return answer(db)
        except BadQuery as error:
            return 400, {"error": str(error)}
        except sqlite3.Error as error:
            return 503, {"error": f"{self.path}: {error}"}
        finally:
            db.close()

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)


def _no_fields(_why: str) -> Answer:
    return 200, {"fields": []}


def _no_trend(why: str) -> Answer:
    return 400, {"error": f"nothing is logged yet: {why}"}
