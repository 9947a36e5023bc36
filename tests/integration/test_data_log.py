"""The data log in a real ``edgeloop run``: the plant's changes reach SQLite through the
io process, ``edgeloop query`` reads them, and a SIGKILL of the io process mid-write
leaves a database that opens clean, having lost no more than the flush interval."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.data import store
from tests.process_tree import child_named

FLUSH_S = 0.5
LEVEL = "tank1.TankLevel.level_m"
CONFIG = f"""
runtime: {{name: logged, state_dir: {{state_dir}}}}
tank_plant:
  tanks: [{{name: tank1, initial_level_m: 0.4, setpoint_m: 1.2}}]
data_log:
  flush_interval_s: {FLUSH_S}
"""


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("{state_dir}", str(state)))
    with (tmp_path / "appliance.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield proc, state / "data.sqlite3"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _newest_us(path: Path) -> int | None:
    """The time of the newest level sample committed, or None (no file or rows yet)."""
    if not path.exists():
        return None
    try:
        db = store.open_read_only(path)
        try:
            row = db.execute(
                "SELECT max(t1_us) FROM raw JOIN fields ON raw.field = fields.id WHERE name = ?",
                (LEVEL,),
            ).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None  # the schema is being made
    return None if row[0] is None else int(row[0])


def _until(what: str, condition: object, timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        got = condition() if callable(condition) else condition
        if got:
            return got
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def _opens_clean_having_lost_one_interval_at_most(path: Path, killed_us: int) -> None:
    db = sqlite3.connect(path)  # as the next logger opens it: the WAL is recovered
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    kept = _newest_us(path)
    assert kept is not None
    lost_s = (killed_us - kept) / 1e6
    # One interval, plus the ticks on their way to the io process when it died.
    assert lost_s <= FLUSH_S + 0.25, f"{lost_s:.3f} s of samples lost"


def test_the_plant_is_logged_and_queried(
    appliance: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    _, path = appliance
    first = _until("a committed sample", lambda: _newest_us(path))
    _until("a later commit", lambda: (_newest_us(path) or 0) > first)  # type: ignore[operator]
    query = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "query", LEVEL, "--file", str(path),
         "--since", "5m", "--resolution", "raw"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = query.stdout.splitlines()
    assert lines[0] == "time,value"
    values = [float(line.split(",")[1]) for line in lines[1:]]
    assert len(values) > 10 and len(set(values)) > 10, "a moving level, sample by sample"
    assert all(0.0 <= v <= 2.0 for v in values)
    listing = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "query", "--file", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert LEVEL in listing.stdout.split()


def test_a_killed_io_process_loses_at_most_the_flush_interval(
    appliance: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, path = appliance
    _until("a committed sample", lambda: _newest_us(path))
    io = child_named(proc.pid, "edgeloop-io")
    time.sleep(FLUSH_S * 1.3)  # mid-interval, not just after a commit
    os.kill(io, signal.SIGKILL)
    killed_us = time.time_ns() // 1000
    _opens_clean_having_lost_one_interval_at_most(path, killed_us)
    _until("the restarted io process logging again", lambda: (_newest_us(path) or 0) > killed_us)


def test_a_killed_process_tree_leaves_a_clean_database_within_the_flush_interval(
    appliance: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, path = appliance
    _until("a committed sample", lambda: _newest_us(path))
    tree = [child_named(proc.pid, "edgeloop-io"), child_named(proc.pid, "edgeloop-ctl"), proc.pid]
    time.sleep(FLUSH_S * 1.3)
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    killed_us = time.time_ns() // 1000
    proc.wait(10)
    _opens_clean_having_lost_one_interval_at_most(path, killed_us)
