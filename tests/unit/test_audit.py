"""The audit log: a hash chain that survives reopening, a torn tail, a full queue and a
slow disk, and shows any entry removed, changed or moved."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.safety.audit import FILE_NAME, AuditError, AuditLog, verify
from edgeloop.safety.audit_chain import GENESIS, canonical, digest

FLUSH_S = 10.0  # generous: a loaded 2-core box; a working flush takes milliseconds


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_log(state_dir: Path, count: int) -> Path:
    with AuditLog.open(state_dir) as audit:
        for index in range(count):
            assert audit.append("command", client="robot-1", what=f"move {index}", tick=index)
        assert audit.flush(FLUSH_S)
    return state_dir / FILE_NAME


class StalledSync:
    """A sync that blocks until released, and says when the writer is inside it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        self.entered.set()
        assert self.release.wait(FLUSH_S)
        os.fdatasync(fd)


@pytest.fixture
def stalled(tmp_path: Path) -> Iterator[tuple[AuditLog, StalledSync]]:
    sync = StalledSync()
    audit = AuditLog.open(tmp_path, capacity=4, sync=sync)
    yield audit, sync
    sync.release.set()
    audit.close()


def test_an_entry_says_seq_time_event_fields_and_its_chain(tmp_path: Path) -> None:
    path = write_log(tmp_path, 2)
    first, second = entries(path)
    assert first["seq"] == 0 and second["seq"] == 1
    assert first["event"] == "command" and first["client"] == "robot-1"
    assert first["what"] == "move 0" and second["tick"] == 1
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert first["prev"] == GENESIS and second["prev"] == first["hash"]
    without_hash = {key: value for key, value in first.items() if key != "hash"}
    assert first["hash"] == digest(canonical(without_hash))
    assert verify(path).ok


def test_odd_field_values_are_hashed_as_they_read_back(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit:
        audit.append("interlock", limits={10: "hi", 9: "lo"}, pair=(1, 2), where=tmp_path)
        assert audit.flush(FLUSH_S)
    result = verify(tmp_path / FILE_NAME)
    assert result.ok, result
    (entry,) = entries(tmp_path / FILE_NAME)
    assert entry["limits"] == {"10": "hi", "9": "lo"} and entry["pair"] == [1, 2]


def test_a_field_json_cannot_hold_still_leaves_the_event_in_the_log(tmp_path: Path) -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with AuditLog.open(tmp_path) as audit:
        audit.append("command", what=cycle, tick=7)
        audit.append("command", what="next")
        assert audit.flush(FLUSH_S)
    odd, after = entries(tmp_path / FILE_NAME)
    assert odd["event"] == "command" and odd["tick"] == 7 and "what" not in odd
    assert "Circular reference" in odd["unrecordable"] and after["what"] == "next"
    assert verify(tmp_path / FILE_NAME).ok


def test_reserved_field_names_are_refused_in_the_caller(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit, pytest.raises(ValueError, match="seq"):
        audit.append("command", seq=3)


def test_the_chain_continues_across_reopen(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    path = write_log(tmp_path, 2)
    result = verify(path)
    assert result.ok and result.entries == 5 and result.last_seq == 4
    assert [entry["seq"] for entry in entries(path)] == [0, 1, 2, 3, 4]


def test_flushed_entries_are_in_the_file_for_another_reader(tmp_path: Path) -> None:
    audit = AuditLog.open(tmp_path)
    try:
        audit.append("estop.press", source="gpio", tick=42)
        assert audit.flush(FLUSH_S)
        assert audit.durable == 1
        # Read through a descriptor of its own while the log is still open.
        (entry,) = entries(tmp_path / FILE_NAME)
        assert entry["event"] == "estop.press" and entry["tick"] == 42
    finally:
        audit.close()


def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path), pytest.raises(AuditError, match="another process"):
        AuditLog.open(tmp_path)


def rewrite(path: Path, change: Any) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(change(lines)))


def test_an_edited_field_is_a_hash_mismatch_on_its_line(tmp_path: Path) -> None:
    path = write_log(tmp_path, 5)
    rewrite(path, lambda lines: [*lines[:2], lines[2].replace(b"move 2", b"move 9"), *lines[3:]])
    result = verify(path)
    assert not result.ok and result.line == 3 and result.seq == 2
    assert result.reason.startswith("hash mismatch") and result.entries == 2


def test_an_edited_and_rehashed_entry_breaks_the_next_ones_prev(tmp_path: Path) -> None:
    path = write_log(tmp_path, 5)

    def forge(lines: list[bytes]) -> list[bytes]:
        entry = json.loads(lines[2])
        del entry["hash"]
        entry["what"] = "move 9"
        forged = {**entry, "hash": digest(canonical(entry))}
        return [*lines[:2], json.dumps(forged).encode() + b"\n", *lines[3:]]

    rewrite(path, forge)
    result = verify(path)
    assert not result.ok and result.line == 4 and result.seq == 3
    assert result.reason.startswith("prev mismatch")


@pytest.mark.parametrize("removed", [0, 2])
def test_a_removed_entry_is_a_seq_gap_where_it_was(tmp_path: Path, removed: int) -> None:
    path = write_log(tmp_path, 5)
    rewrite(path, lambda lines: [*lines[:removed], *lines[removed + 1 :]])
    result = verify(path)
    assert not result.ok and result.line == removed + 1 and result.seq == removed + 1
    assert result.reason == f"seq gap: expected {removed}, found {removed + 1}"


def test_reordered_entries_are_a_seq_gap_at_the_first_moved(tmp_path: Path) -> None:
    path = write_log(tmp_path, 5)
    rewrite(path, lambda lines: [lines[0], lines[1], lines[3], lines[2], lines[4]])
    result = verify(path)
    assert not result.ok and result.line == 3 and result.seq == 3
    assert result.reason.startswith("seq gap")


def test_a_bad_line_in_the_middle_is_reported_not_repaired(tmp_path: Path) -> None:
    path = write_log(tmp_path, 4)
    rewrite(path, lambda lines: [*lines[:1], b'{"seq": 1, "hash\n', *lines[2:]])
    assert verify(path).line == 2 and verify(path).reason == "bad JSON"
    write_log(tmp_path, 1)  # opens and appends: the bad line stays where it is
    assert path.read_bytes().splitlines()[1] == b'{"seq": 1, "hash'
    result = verify(path)
    assert not result.ok and result.line == 2 and result.reason == "bad JSON"


@pytest.mark.parametrize(
    "torn",
    [b'{"seq":3,"time":"2024', b"\0" * 40 + b"\n", b'{"seq":3,"ti}\n'],
    ids=["no newline", "zeros", "bad json"],
)
def test_a_torn_last_line_is_cut_and_recorded(tmp_path: Path, torn: bytes) -> None:
    path = write_log(tmp_path, 3)
    with path.open("ab") as file:
        file.write(torn)
    assert not verify(path).ok
    write_log(tmp_path, 1)
    result = verify(path)
    assert result.ok, result
    events = [(entry["seq"], entry["event"]) for entry in entries(path)]
    assert events[3:] == [(3, "audit.recovered"), (4, "command")]
    assert entries(path)[3]["dropped_bytes"] == len(torn)


def test_a_last_line_that_is_json_but_no_entry_stops_the_open(tmp_path: Path) -> None:
    path = write_log(tmp_path, 2)
    with path.open("ab") as file:
        file.write(b'{"note": "added by hand"}\n')
    with pytest.raises(AuditError, match="not an audit entry"):
        AuditLog.open(tmp_path)


def test_long_lines_are_read_back_from_the_end(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as audit:
        for index in range(3):
            audit.append("command", payload="x" * 20_000, index=index)
        assert audit.flush(FLUSH_S)
    path = tmp_path / FILE_NAME
    with path.open("ab") as file:
        file.write(b'{"torn": "')
    path = write_log(tmp_path, 1)
    result = verify(path)
    assert result.ok and result.entries == 5


def test_appends_never_wait_for_a_stalled_sync(stalled: tuple[AuditLog, StalledSync]) -> None:
    audit, sync = stalled
    assert audit.append("command", what="first")
    assert sync.entered.wait(FLUSH_S)
    # The writer sits in its sync; appending returns at once all the same.
    assert all(audit.append("command", what=f"next {index}") for index in range(4))
    assert not sync.release.is_set() and audit.durable == 0
    sync.release.set()
    assert audit.flush(FLUSH_S)
    assert audit.durable == 5 and audit.dropped == 0


def test_a_full_queue_drops_counts_and_records_the_loss(
    stalled: tuple[AuditLog, StalledSync],
) -> None:
    audit, sync = stalled
    assert audit.append("command", what="taken")
    assert sync.entered.wait(FLUSH_S)
    accepted = [audit.append("command", what=f"queued {index}") for index in range(6)]
    assert accepted == [True] * 4 + [False] * 2
    assert audit.dropped == 2
    sync.release.set()
    assert audit.flush(FLUSH_S)
    written = entries(audit.path)
    assert [entry["event"] for entry in written] == ["command"] * 5 + ["audit.dropped"]
    assert written[-1]["count"] == 2
    assert verify(audit.path).ok


def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    audit = AuditLog.open(tmp_path)
    audit.append("command", what="last")
    assert audit.close()
    assert not audit.append("command", what="too late")
    assert audit.dropped == 1 and not audit.flush(FLUSH_S)
    assert [entry["what"] for entry in entries(tmp_path / FILE_NAME)] == ["last"]


def test_a_failing_sync_is_retried_and_reported(tmp_path: Path) -> None:
    failures = [OSError(5, "Input/output error")]

    def flaky(fd: int) -> None:
        if failures:
            raise failures.pop()
        os.fdatasync(fd)

    with AuditLog.open(tmp_path, sync=flaky) as audit:
        audit.append("command", what="retried")
        assert audit.flush(FLUSH_S)
        assert audit.durable == 1 and audit.last_error is None
    assert verify(tmp_path / FILE_NAME).ok


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path):
        pass
    result = verify(tmp_path / FILE_NAME)
    assert result.ok and result.entries == 0 and result.last_seq is None
