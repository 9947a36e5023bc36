"""Store-and-forward: changes an uplink could not send yet, in order, on disk (SQLite).

One table of changes in arrival order (``seq``, the SQLite rowid), bounded: past
``max_changes`` the oldest are deleted and counted (``dropped``), so what waits is the
latest history. WAL with ``synchronous=FULL``: an appended batch is on the disk when
``append`` returns, and a power cut loses only what had not been appended yet (the
caller appends every flush interval). A small key/value table keeps what must outlive
a restart: Sparkplug's bdSeq, the PostgreSQL sink's numbering of field names.

Not thread-safe: the uplink calls it from one worker thread at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# metric (the uplink's index), t_us, value (None: null), quality (the uplink's code;
# None: it carries none)
Change = tuple[int, int, Any, int | None]
Stored = tuple[int, int, int, Any, int | None]  # seq, then a Change

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    metric INTEGER NOT NULL,
    t_us INTEGER NOT NULL,
    value,
    quality INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Backlog:
    def __init__(self, path: Path, max_changes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_changes = max_changes
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(changes)")]
        if "quality" not in columns:  # a backlog from before qualities: its rows have none
            self.db.execute("ALTER TABLE changes ADD COLUMN quality INTEGER")
        self.count: int = self.db.execute("SELECT count(*) FROM changes").fetchone()[0]
        self.dropped = 0

    def close(self) -> None:
        self.db.close()

    def append(self, changes: Sequence[Change]) -> int:
        """Store ``changes`` after those waiting; the number of old ones dropped for room."""
        if not changes:
            return 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO changes (metric, t_us, value, quality) VALUES (?, ?, ?, ?)", changes
            )
            self.count += len(changes)
            over = self.count - self.max_changes
            if over > 0:
                oldest = "SELECT seq FROM changes ORDER BY seq LIMIT ?"
                self.db.execute(f"DELETE FROM changes WHERE seq IN ({oldest})", (over,))
                self.count -= over
                self.dropped += over
        return max(over, 0)

    def head(self, limit: int) -> list[Stored]:
        """The oldest ``limit`` changes waiting, oldest first."""
        rows = self.db.execute(
            "SELECT seq, metric, t_us, value, quality FROM changes ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            (int(s), int(m), int(t), v, None if q is None else int(q)) for s, m, t, v, q in rows
        ]

    def remove_through(self, seq: int) -> None:
        """Forget the changes up to ``seq``: they were sent and confirmed."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            gone = self.db.execute("DELETE FROM changes WHERE seq <= ?", (seq,)).rowcount
            self.count -= gone

    def get(self, key: str, default: int) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def keys(self, prefix: str) -> dict[str, int]:
        """Every key that starts with ``prefix`` (without it), and its value."""
        rows = self.db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(key)[len(prefix) :]: int(value) for key, value in rows}

    def put(self, key: str, value: int) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
