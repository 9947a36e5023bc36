"""The uplinks' store-and-forward backlog: in order, bounded (the oldest go, counted),
and still there after a reopen."""

from __future__ import annotations

from pathlib import Path

from edgeloop.uplink.backlog import Backlog


def test_changes_come_back_in_order_until_removed(tmp_path: Path) -> None:
    backlog = Backlog(tmp_path / "b.sqlite3", max_changes=1000)
    backlog.append([(0, 10, 1.5), (1, 11, None), (0, 12, True)])
    rows = backlog.head(2)
    assert [(m, t, v) for _, m, t, v in rows] == [(0, 10, 1.5), (1, 11, None)]
    backlog.remove_through(rows[-1][0])
    assert [(m, t, v) for _, m, t, v in backlog.head(10)] == [(0, 12, 1)]
    assert backlog.count == 1


def test_past_the_bound_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    backlog = Backlog(tmp_path / "b.sqlite3", max_changes=1000)
    assert backlog.append([(0, t, float(t)) for t in range(1500)]) == 500
    assert backlog.count == 1000
    assert backlog.dropped == 500
    assert [t for _, _, t, _ in backlog.head(1)] == [500]


def test_what_waits_and_the_session_counter_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    backlog = Backlog(path, max_changes=1000)
    backlog.append([(2, 5, 0.25)])
    backlog.put("bdSeq", 7)
    backlog.close()
    again = Backlog(path, max_changes=1000)
    assert again.count == 1
    assert [(m, t, v) for _, m, t, v in again.head(5)] == [(2, 5, 0.25)]
    assert again.get("bdSeq", 0) == 7
    assert again.get("other", 3) == 3
