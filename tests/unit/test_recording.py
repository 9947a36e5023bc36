"""The recording file: segments by size, bounded in total with an end that says why,
headers checked on reading, and the input tape's record and play back."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.clock import Time
from edgeloop.config import Config, RuntimeConfig
from edgeloop.data.recording import (
    RecordingError,
    RecordingWriter,
    read_recording,
    segment_path,
)
from edgeloop.data.tape import InputTape
from edgeloop.world import World

PAYLOAD = "x" * 1000


def _config(**runtime: int) -> Config:
    return Config(Path("c.yaml"), RuntimeConfig(**runtime), {}, [])


def test_a_recording_goes_on_in_segments_and_reads_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.rec"
    writer = RecordingWriter(path, _config(record_segment_mb=1))
    for tick in range(1, 3001):  # ~3 MB: three segments
        writer.put(["tick", tick, [["t", "k", PAYLOAD]]])
    writer.close(3000)
    assert segment_path(path, 2).exists() and not segment_path(path, 4).exists()
    head, events = read_recording(path)
    assert head["segment"] == 0 and head["runtime"]["record_segment_mb"] == 1
    got = list(events)
    assert [e[1] for e in got if e[0] == "tick"] == list(range(1, 3001))
    assert got[-1] == ["end", 3000, "stopped"]


def test_a_recording_past_its_bound_ends_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "run.rec"
    writer = RecordingWriter(path, _config(record_segment_mb=1, record_max_mb=1))
    for tick in range(1, 3001):
        writer.put(["tick", tick, [["t", "k", PAYLOAD]]])
    writer.close(3000)
    _, events = read_recording(path)
    got = list(events)
    assert got[-1][0] == "end" and "record_max_mb (1)" in got[-1][2]
    assert 900 < len(got) < 1100, "about 1 MiB of ticks, then the end"


def test_a_new_recording_removes_the_segments_of_an_older_one(tmp_path: Path) -> None:
    path = tmp_path / "run.rec"
    stale = segment_path(path, 1)
    stale.write_bytes(b"an older recording's second segment")
    RecordingWriter(path, _config()).close(0)
    assert not stale.exists()
    _, events = read_recording(path)
    assert list(events) == [["end", 0, "stopped"]]


def test_what_is_not_a_recording_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no recording"):
        read_recording(tmp_path / "missing.rec")
    junk = tmp_path / "junk.rec"
    junk.write_bytes(b"\x93\x01\x02\x03")
    with pytest.raises(RecordingError, match="not an edgeloop recording"):
        read_recording(junk)


def test_the_tape_records_changes_and_plays_them_back_at_the_same_reads() -> None:
    world = World()
    world.insert_resource(Time(100.0))
    events: list[list[object]] = []
    recording = InputTape(world, events.append)
    levels = iter([False, False, True, True, False])
    seen = [recording.read("estop.inputs[0]", lambda: next(levels)) for _ in range(5)]
    assert seen == [False, False, True, True, False]
    assert events == [
        ["in", "estop.inputs[0]", 1, False],
        ["in", "estop.inputs[0]", 3, True],
        ["in", "estop.inputs[0]", 5, False],
    ], "only the changes, with the read they came at"

    playing = InputTape(world)
    for _, name, count, value in events:
        playing.load(str(name), int(str(count)), value)
    assert [playing.read("estop.inputs[0]", lambda: None) for _ in range(5)] == seen

    ran: list[int] = []
    wrapped = recording.wake("estop", lambda: ran.append(1))
    wrapped()
    assert ran == [1] and events[-1] == ["wake", 0, "estop"]
    assert playing.wake("estop", lambda: ran.append(2)) is not None
    playing.handlers["estop"]()
    assert ran == [1, 2], "replaying, the replay runs the handler where recorded"
