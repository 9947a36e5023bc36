"""The recording file: every input of the control process, tick by tick (format 2).

A recording is one or more segment files, ``PATH``, ``PATH.1``, ``PATH.2``, ... Each is
a stream of msgpack objects; the first of each segment is its header, a map::

    {"format": "edgeloop-recording", "version": 2, "segment": 0, "edgeloop": "0.1.0",
     "config_digest": "...", "runtime": {...}, "sections": {name: {...}}}

(``runtime`` and ``sections``: the validated config, as JSON-able values), then events,
each an array whose first item says what it is:

- ``["tick", T, [[topic, key, payload], ...]]``: the io records tick T consumed, in order.
- ``["link", T, [up, ...], [generation, ...]]``: each io worker's channel is up or not
  and how often it was replaced, as of tick T (written when it changes, before the tick).
- ``["in", name, k, value]``: input ``name`` (an e-stop line, ``estop.inputs[0]``) read
  ``value`` at its ``k``-th read (counted from 1), and every read since its previous
  event the previous value: only changes are written.
- ``["wake", T, name]``: a wake source's handler (``estop``) ran after tick T;
  ``["wake", T, name, S]``: during tick T, after its system set ``S`` (version 2).
- ``["update", T]``: an Update pass ran after tick T.
- ``["hash", T, digest, {component type: digest}]``: ``World.state_hash()`` and
  ``component_hashes()`` after tick T and what followed it, every ``record_hash_every``
  ticks.
- ``["end", T, why]``: the last event (a clean stop, or the size limit).

Events are written by a thread; the tick only queues them (at most ``MAX_QUEUED``;
past that the recording is cut with an ``end`` saying so, since a replay with a gap
would diverge anyway).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from edgeloop import __version__
from edgeloop.config import Config, config_digest

log = logging.getLogger("edgeloop.record")

FORMAT = "edgeloop-recording"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1 has no wakes during a tick
MAX_QUEUED = 100_000
_STOP = object()


class RecordingError(ValueError):
    """Not a recording this edgeloop can replay."""


def header(config: Config, segment: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "segment": segment,
        "edgeloop": __version__,
        "config_digest": config_digest(config),
        # What the file said (unset keys left out): validated again as it was.
        "runtime": config.runtime.model_dump(mode="json", exclude_unset=True),
        "sections": {
            name: m.model_dump(mode="json", exclude_unset=True)
            for name, m in config.sections.items()
        },
    }


def segment_path(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class RecordingWriter:
    """Events to the segment files, from a thread; ``put`` never waits."""

    def __init__(self, path: Path, config: Config) -> None:
        runtime = config.runtime
        self.path = path
        self.config = config
        self.segment_bytes = runtime.record_segment_mb << 20
        self.max_bytes = runtime.record_max_mb << 20
        self.written = 0
        self.ended: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name}.*"):
            if stale.name[len(path.name) + 1 :].isdigit():
                stale.unlink()  # an older recording's segments would follow this one
        self._thread = threading.Thread(target=self._run, name="edgeloop-record", daemon=True)
        self._thread.start()

    def put(self, event: list[Any]) -> None:
        """Queue ``event``, packed now: its payloads may change once the tick goes on."""
        if self.ended is not None:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.ended = "the writer fell behind"
            self._queue.put(_end(event, self.ended))
            log.error("recording %s cut: %s", self.path, self.ended)
            return
        self._queue.put(msgpack.packb(event))

    def close(self, tick: int, why: str = "stopped") -> None:
        if self.ended is None:
            self.ended = why
            self._queue.put(msgpack.packb(["end", tick, why]))
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        segment = 0
        out = segment_path(self.path, 0).open("wb")
        size = out.write(msgpack.packb(header(self.config, 0)))
        try:
            while (data := self._queue.get()) is not _STOP:
                if self.written + len(data) > self.max_bytes:
                    why = f"the recording reached record_max_mb ({self.max_bytes >> 20})"
                    log.warning("recording %s stopped: %s", self.path, why)
                    self.ended = why
                    out.write(msgpack.packb(["end", -1, why]))
                    while self._queue.get() is not _STOP:
                        pass
                    return
                if size + len(data) > self.segment_bytes:
                    out.close()
                    segment += 1
                    out = segment_path(self.path, segment).open("wb")
                    size = out.write(msgpack.packb(header(self.config, segment)))
                size += out.write(data)
                self.written += len(data)
        finally:
            out.close()


def _end(event: list[Any], why: str) -> bytes:
    data: bytes = msgpack.packb(["end", event[1] if len(event) > 1 else -1, why])
    return data


def read_recording(path: Path) -> tuple[dict[str, Any], Iterator[list[Any]]]:
    """The first header and every event of the recording at ``path``, over its segments."""
    first = segment_path(path, 0)
    if not first.exists():
        raise RecordingError(f"no recording at {path}")
    opened = _open_segment(first, 0)
    head = opened[0]

    def events() -> Iterator[list[Any]]:
        index, (_, unpacker) = 0, opened
        while True:
            for event in unpacker:
                yield event
                if event[0] == "end":
                    return
            index += 1
            following = segment_path(path, index)
            if not following.exists():
                return
            _, unpacker = _open_segment(following, index)

    return head, events()


def _open_segment(path: Path, index: int) -> tuple[dict[str, Any], msgpack.Unpacker]:
    unpacker = msgpack.Unpacker(path.open("rb"), raw=False, strict_map_key=False)
    try:
        head = next(unpacker)
    except (StopIteration, ValueError) as error:
        raise RecordingError(f"{path}: no header ({error or 'empty'})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RecordingError(f"{path}: not an edgeloop recording")
    if head.get("version") not in READABLE_VERSIONS:
        raise RecordingError(
            f"{path}: format version {head.get('version')}, not one of {READABLE_VERSIONS}"
        )
    if head.get("segment") != index:
        raise RecordingError(f"{path}: segment {head.get('segment')}, expected {index}")
    return head, unpacker
