"""Finding the runtime's processes from a test, as ``ps`` shows them."""

from __future__ import annotations

from pathlib import Path


def child_named(parent: int, comm: str) -> int:
    """The pid of ``parent``'s child process named ``comm``; LookupError if none."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return int(pid)
    raise LookupError(f"no child process named {comm}")
