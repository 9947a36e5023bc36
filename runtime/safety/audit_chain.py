"""The audit file's format: hash-chained JSON lines, and reading them back.

Each line of ``audit.jsonl`` is one JSON object: ``seq`` (0, 1, 2, ...), ``time`` (wall
clock, ISO 8601 UTC), ``event`` (``command``, ``estop.press``, ...), the caller's fields,
``prev`` (the previous entry's ``hash``; ``GENESIS`` for seq 0) and ``hash``: the sha256
hex of the entry without ``hash`` as canonical JSON (``sort_keys=True``,
``separators=(",", ":")``). Editing an entry breaks its hash; removing or reordering
entries breaks ``seq`` and ``prev``. Cutting entries off the end leaves a valid, shorter
chain: only a copy of the head (``VerifyResult.last_seq`` and ``last_hash``) kept
elsewhere shows that.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "audit.jsonl"
GENESIS = "0" * 64
TAIL_CHUNK = 4096  # read back from the end at a time: a few entries
_SCALARS = (str, int, float, bool, type(None))


class AuditError(Exception):
    """An audit file this runtime must not append to (its last line is not an entry, or
    another process holds it)."""


def canonical(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def entry_line(entry: dict[str, Any]) -> tuple[bytes, str]:
    """``entry`` (without ``hash``) as its line and its hash.

    What is hashed is what a reader parses back: flat scalar fields (every entry the
    runtime writes) go as they are; anything else (a tuple, a dict with int keys, a
    Path) is first turned into JSON and read back, which costs a second pass."""
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=repr)
    if not all(type(value) in _SCALARS for value in entry.values()):
        body = canonical(json.loads(body))
    hashed = digest(body)
    return f'{body[:-1]},"hash":"{hashed}"}}\n'.encode(), hashed


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain of a file ends: the next entry continues from here."""

    next_seq: int
    prev: str
    length: int  # bytes of whole lines; anything after is a torn line
    torn: int  # bytes of a torn last line (to be cut off)


def read_head(fd: int) -> Head:
    """The end of the chain in the open file ``fd``. The last line is torn when it has
    no newline or is not JSON (a power cut mid-write); the entry before it is the head.

    Raises AuditError when the last whole line is JSON but not an entry."""
    size = os.fstat(fd).st_size
    # Three newlines in what is read (or the file's start) hold the last whole line even
    # when a torn line follows it.
    chunk = TAIL_CHUNK
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        if start == 0 or data.count(b"\n") >= 3:
            break
        chunk *= 4
    lines = data.split(b"\n")
    if start > 0:
        lines.pop(0)  # the end of a line that began before what was read
    torn = len(lines.pop())  # after the last newline: 0 when the file ends whole
    if lines and _parsed(lines[-1]) is None:
        torn += len(lines.pop()) + 1
    if not lines:
        return Head(0, GENESIS, size - torn, torn)
    entry = _parsed(lines[-1])
    if not _is_entry(entry):
        raise AuditError(
            "the last line is JSON but not an audit entry (no seq and hash); "
            "`edgeloop audit verify --file PATH` shows where the chain breaks"
        )
    return Head(entry["seq"] + 1, entry["hash"], size - torn, torn)


def _parsed(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _is_entry(parsed: Any) -> bool:
    return (
        isinstance(parsed, dict)
        and type(parsed.get("seq")) is int
        and isinstance(parsed.get("hash"), str)
    )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int  # entries verified from the first, up to the first bad one
    last_seq: int | None = None  # the head of the verified chain
    last_hash: str = GENESIS
    line: int | None = None  # the first bad line, 1-based
    seq: int | None = None  # its seq, where it has one
    reason: str = ""


def verify(path: Path) -> VerifyResult:
    """Walk the chain of ``path`` to the first line that breaks it."""
    entries, last_seq, last_hash = 0, None, GENESIS

    def bad(line: int, seq: object, reason: str) -> VerifyResult:
        seq = seq if type(seq) is int else None
        return VerifyResult(False, entries, last_seq, last_hash, line, seq, reason)

    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            entry = _parsed(raw)
            if not raw.endswith(b"\n"):
                return bad(number, None, "torn last line (no newline); the next open cuts it")
            if entry is None:
                return bad(number, None, "bad JSON")
            seq = entry.get("seq") if isinstance(entry, dict) else None
            if not _is_entry(entry):
                return bad(number, seq, "not an audit entry (no seq and hash)")
            stored = entry.pop("hash")
            if digest(canonical(entry)) != stored:
                return bad(number, seq, "hash mismatch (the entry was changed)")
            if seq != entries:
                return bad(number, seq, f"seq gap: expected {entries}, found {seq}")
            if entry.get("prev") != last_hash:
                return bad(number, seq, "prev mismatch (an entry before it was changed)")
            entries, last_seq, last_hash = entries + 1, seq, stored
    return VerifyResult(True, entries, last_seq, last_hash)


def last_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of ``path``, read from its end."""
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        chunk = TAIL_CHUNK * (count + 1)
        while True:
            start = max(0, size - chunk)
            file.seek(start)
            data = file.read(size - start)
            if start == 0 or data.count(b"\n") > count:
                break
            chunk *= 4
    lines = data.splitlines()
    if start > 0:
        lines.pop(0)
    return lines[-count:] if count > 0 else []
