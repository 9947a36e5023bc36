"""``edgeloop query FIELD``: a field's logged values from the data log, as CSV."""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from edgeloop.config import load_config_or_report
from edgeloop.data import store
from edgeloop.data.config import DataLogConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")  # how long ago
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# auto: the finest tier that keeps a span within a screen's worth of points or so
_AUTO = ((2 * 3600, "raw"), (7 * 86400, "minute"))

Choice = Literal["auto", "raw", "minute", "hour"]


def add_query_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], default_config: Path
) -> None:
    query = commands.add_parser("query", help="print a field's logged values (CSV)")
    query.add_argument("field", nargs="?", help="entity.Component.field; without: list them")
    source = query.add_mutually_exclusive_group()
    source.add_argument("-c", "--config", type=Path, default=default_config)
    source.add_argument("--file", type=Path, metavar="PATH", help="this data log")
    query.add_argument("--since", default="1h", help="30s, 10m, 2h, 7d (ago) or ISO 8601")
    query.add_argument("--until", default="now", help="now, how long ago, or ISO 8601")
    query.add_argument("--resolution", choices=["auto", "raw", "minute", "hour"], default="auto")
    query.set_defaults(command=_query)


def parse_time(text: str, now_us: int) -> int:
    """µs since the epoch of ``now``, ``10m`` (ago; ``-10m`` too) or an ISO 8601 time
    (UTC unless it says otherwise); ``ValueError`` naming what it cannot read."""
    if text == "now":
        return now_us
    relative = _RELATIVE.match(text)
    if relative:
        return now_us - int(float(relative[1]) * _UNIT_S[relative[2]] * 1_000_000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        message = f"{text!r} is not a time: write now, 10m, 2h (ago) or 2026-12-03T08:00"
        raise ValueError(message) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000)


def resolution_for(choice: Choice, since_us: int, until_us: int) -> store.Resolution:
    if choice != "auto":
        return choice
    span_s = (until_us - since_us) / 1e6
    for longest_s, resolution in _AUTO:
        if span_s <= longest_s:
            return resolution  # type: ignore[return-value]
    return "hour"


def _database(args: argparse.Namespace) -> Path | None:
    if args.file is not None:
        path: Path = args.file
        return path
    config = load_config_or_report(args.config)
    if config is None:
        return None
    section = config.sections.get("data_log")
    chosen = section if isinstance(section, DataLogConfig) else DataLogConfig()
    return chosen.database(config.runtime.state_dir)


def _query(args: argparse.Namespace) -> int:
    path = _database(args)
    if path is None:
        return EXIT_BAD_CONFIG
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    try:
        since_us, until_us = parse_time(args.since, now_us), parse_time(args.until, now_us)
        db = store.open_read_only(path)
    except (ValueError, FileNotFoundError) as error:
        print(f"edgeloop query: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.field is None:
            for name in store.names(db):
                print(name)
            return EXIT_OK
        resolution = resolution_for(args.resolution, since_us, until_us)
        points = store.read(db, args.field, since_us, until_us, resolution)
    except sqlite3.Error as error:
        print(f"edgeloop query: {path}: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        db.close()
    print("time,value,min,max" if resolution != "raw" else "time,value")
    for point in points:
        when = datetime.fromtimestamp(point.t_us / 1e6, UTC).isoformat(timespec="milliseconds")
        if resolution == "raw":
            print(f"{when},{_number(point.value)}")
        else:
            print(f"{when},{_number(point.value)},{_number(point.low)},{_number(point.high)}")
    return EXIT_OK


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
