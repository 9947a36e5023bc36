"""The end of the audit log, for the dashboard: the last entries of ``audit.jsonl``,
read from its end (at most ``TAIL_BYTES``), so a long log costs no more than a short one.
The chain fields (``prev``, ``hash``) stay behind: ``edgeloop audit verify`` checks them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeloop.net.protocol import AuditTail

TAIL_BYTES = 64 << 10
MAX_ENTRIES = 200
_CHAIN = ("prev", "hash")


def tail(path: Path, count: int) -> list[dict[str, Any]]:
    """The last ``count`` (at most ``MAX_ENTRIES``) complete entries, newest last."""
    count = max(0, min(count, MAX_ENTRIES))
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            text = file.read()
    except FileNotFoundError:
        return []
    lines = text[: text.rfind(b"\n") + 1].splitlines()
    if len(text) >= TAIL_BYTES and lines:
        lines = lines[1:]  # the first may be the end of a line cut by the seek
    entries = []
    for line in lines[-count:] if count else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append({k: v for k, v in entry.items() if k not in _CHAIN})
    return entries


class TailWatch:
    """The last ``count`` entries of the log at ``path`` each time it has changed."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._seen: tuple[int, int] | None = None

    def build(self) -> AuditTail | None:
        """The tail if the file changed since the last call (the first call: always)."""
        try:
            stat = self.path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = (-1, 0)
        if seen == self._seen:
            return None
        self._seen = seen
        return AuditTail(tail(self.path, self.count))
