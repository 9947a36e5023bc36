"""A process killed mid-stream loses nothing it flushed, and its log still verifies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeloop.safety.audit import FILE_NAME, AuditLog, verify

# Appends without pause and, every 100 entries, flushes and says how many are durable.
WRITER = """
import sys
from pathlib import Path
from edgeloop.safety.audit import AuditLog

audit = AuditLog.open(Path(sys.argv[1]))
index = 0
while True:
    if audit.append("command", index=index, what="move", tick=index):
        index += 1
    if index % 100 == 0:
        assert audit.flush(30.0)
        print(index, flush=True)
"""
FLUSHED_BEFORE_KILL = 300
DEADLINE_S = 60.0


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_entries_flushed_before_a_sigkill_survive_and_verify(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    flushed, deadline = 0, time.monotonic() + DEADLINE_S
    try:
        while flushed < FLUSHED_BEFORE_KILL and time.monotonic() < deadline:
            flushed = int(child.stdout.readline())
        # Mid-stream: entries after the last flush are reaching the file.
        while lines_in(tmp_path / FILE_NAME) <= flushed and time.monotonic() < deadline:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(DEADLINE_S)
    assert flushed >= FLUSHED_BEFORE_KILL
    with AuditLog.open(tmp_path) as audit:  # cuts a torn tail, if the kill left one
        assert audit.flush(DEADLINE_S)
    path = tmp_path / FILE_NAME
    result = verify(path)
    assert result.ok, result
    indexes = [
        entry["index"]
        for entry in map(json.loads, path.read_bytes().splitlines())
        if entry["event"] == "command"
    ]
    assert indexes[:flushed] == list(range(flushed))
