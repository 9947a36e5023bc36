"""``/api/trend`` and ``/api/fields``: the data log read for the dashboard's trends.

The tier is picked by the span (as ``edgeloop query --resolution auto``), then the points
are bucketed to at most ``points`` with min/max/mean per bucket, so a browser never gets
more points than it has pixels. Reads go through a read-only connection (WAL: they never
block the logger that writes).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeloop.data import store
from edgeloop.data.query_cli import resolution_for

MAX_POINTS = 10_000


class BadQuery(ValueError):
    """A trend query that cannot be answered; the text says why (HTTP 400)."""


def fields(path: Path) -> list[str]:
    try:
        db = store.open_read_only(path)
    except FileNotFoundError:
        return []
    try:
        return store.names(db)
    finally:
        db.close()


def trend(path: Path, query: Mapping[str, str]) -> dict[str, Any]:
    name = query.get("field", "")
    since_s, until_s = _number(query, "since"), _number(query, "until")
    points = int(_number(query, "points"))
    if not 1 <= points <= MAX_POINTS:
        raise BadQuery(f"points: {points} is not within 1..{MAX_POINTS}")
    if since_s > until_s:
        raise BadQuery(f"since ({since_s:g}) is after until ({until_s:g})")
    since_us, until_us = int(since_s * 1e6), int(until_s * 1e6)
    resolution = resolution_for("auto", since_us, until_us)
    try:
        db = store.open_read_only(path)
    except FileNotFoundError:
        raise BadQuery(f"unknown field {name!r}: no data log yet") from None
    try:
        if name not in store.names(db):
            raise BadQuery(f"unknown field {name!r}")
        found = store.read(db, name, since_us, until_us, resolution)
    except sqlite3.Error as error:
        raise BadQuery(f"the data log cannot be read: {error}") from None
    finally:
        db.close()
    return {"field": name, "resolution": resolution, **_buckets(found, since_us, until_us, points)}


def _number(query: Mapping[str, str], key: str) -> float:
    try:
        value = float(query[key])
    except KeyError:
        raise BadQuery(f"{key}: missing") from None
    except ValueError:
        raise BadQuery(f"{key}: {query[key]!r} is not a number") from None
    if not math.isfinite(value):
        raise BadQuery(f"{key}: {query[key]!r} is not a finite number")
    return value


def _buckets(
    found: list[store.Point], since_us: int, until_us: int, points: int
) -> dict[str, list[float | None]]:
    """At most ``points`` buckets of equal span over the range, the empty ones left out."""
    span = max(until_us - since_us, 1)
    rows: dict[int, list[float]] = {}  # bucket -> [t_sum, n, min, max, mean_sum, means]
    for point in found:
        if point.value is None:
            continue
        low = point.value if point.low is None else point.low
        high = point.value if point.high is None else point.high
        bucket = min((point.t_us - since_us) * points // span, points - 1)
        row = rows.get(bucket)
        if row is None:
            rows[bucket] = [point.t_us, 1, low, high, point.value]
        else:
            row[0] += point.t_us
            row[1] += 1
            row[2] = min(row[2], low)
            row[3] = max(row[3], high)
            row[4] += point.value
    ordered = [rows[b] for b in sorted(rows)]
    return {
        "t": [r[0] / r[1] / 1e6 for r in ordered],
        "min": [r[2] for r in ordered],
        "max": [r[3] for r in ordered],
        "mean": [r[4] / r[1] for r in ordered],
    }
