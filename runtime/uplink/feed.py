"""Io side of the change feed, for an uplink: the samples of the fields it publishes.

The control process's DataLogging set sends every collected change as ``data.batch``
records (``edgeloop.data.collect``); the data logger and each uplink take the same
records (``IoContext.on_topic`` calls every handler of a topic), so the control tick
collects once whoever consumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgeloop.data.collect import TOPIC_BATCH
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record

# (t_us, [(index in the uplink's fields, value), ...]); a value of None: no value (NaN)
OnChanges = Callable[[int, list[tuple[int, Any]]], None]


class FieldFeed:
    def __init__(self, fields: Sequence[str], context: IoContext, on_changes: OnChanges) -> None:
        self._index = {name: index for index, name in enumerate(fields)}
        self._ids: dict[int, int] = {}  # the control process's id -> index
        self._on_changes = on_changes
        context.on_topic(TOPIC_BATCH, self._on_batch)

    def _on_batch(self, record: Record) -> None:
        _, t_us, declared, flat = record.payload
        for ident, name, *_ in declared:
            index = self._index.get(name)
            if index is not None:
                self._ids[int(ident)] = index
        ids = self._ids
        changes = [
            (ids[ident], value)
            for ident, value in zip(flat[0::2], flat[1::2], strict=True)
            if ident in ids
        ]
        if changes:
            self._on_changes(int(t_us), changes)
