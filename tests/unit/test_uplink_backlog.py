"""The uplinks' store-and-forward backlog: in order, bounded (the oldest go, counted),
and still there after a reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgeloop.uplink.backlog import Backlog


def test_changes_come_back_in_order_until_removed(tmp_path: Path) -> None:
    backlog = Backlog(tmp_path / "b.sqlite3", max_changes=1000)
    backlog.append([(0, 10, 1.5, 192), (1, 11, None, None), (0, 12, True, 500)])
    rows = backlog.head(2)
    assert [(m, t, v, q) for _, m, t, v, q in rows] == [(0, 10, 1.5, 192), (1, 11, None, None)]
    backlog.remove_through(rows[-1][0])
    assert [(m, t, v, q) for _, m, t, v, q in backlog.head(10)] == [(0, 12, 1, 500)]
    assert backlog.count == 1


def test_past_the_bound_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    backlog = Backlog(tmp_path / "b.sqlite3", max_changes=1000)
    assert backlog.append([(0, t, float(t), None) for t in range(1500)]) == 500
    assert backlog.count == 1000
    assert backlog.dropped == 500
    assert [t for _, _, t, _, _ in backlog.head(1)] == [500]


def test_what_waits_and_the_session_counter_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    backlog = Backlog(path, max_changes=1000)
    backlog.append([(2, 5, 0.25, 0)])
    backlog.put("bdSeq", 7)
    backlog.close()
    again = Backlog(path, max_changes=1000)
    assert again.count == 1
    assert [(m, t, v, q) for _, m, t, v, q in again.head(5)] == [(2, 5, 0.25, 0)]
    assert again.get("bdSeq", 0) == 7
    assert again.get("other", 3) == 3


def test_a_backlog_from_before_qualities_opens_with_its_rows_carrying_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " metric INTEGER NOT NULL, t_us INTEGER NOT NULL, value);"
        "INSERT INTO changes (metric, t_us, value) VALUES (3, 7, 1.5);"
    )
    old.close()
    backlog = Backlog(path, max_changes=1000)
    backlog.append([(4, 8, 2.5, 192)])
    assert [(m, t, v, q) for _, m, t, v, q in backlog.head(5)] == [
        (3, 7, 1.5, None),
        (4, 8, 2.5, 192),
    ]
