"""The io side of a field device: what a driver sends to the control process and hears back.

Records on the io channel (both processes build the same point lists from the same
config, so a point travels as its index in its device's ``points``):

- ``field.values``, key ``"<device>/<group>"``, NORMAL: ``[indices, values, quality]``,
  every point of one read group (a Modbus block, a CAN frame, a serial line). A whole
  group per record is what makes NORMAL conflation safe: when the control side is behind,
  the latest record of a group replaces the older one and still holds every point.
  ``indices`` is a list, or the first index of a run of consecutive ones; ``quality`` a
  list, or one quality for all. Three flat lists, not a list per point: decoding a
  small list per point was the largest cost of a 10 000-register poll.
- ``field.health``, key ``"<device>"``, NORMAL: a ``HealthTracker.snapshot()``.
- ``field.write``, key ``"<device>"``, HIGH, control -> io: ``[[index, value], ...]``,
  engineering values of output points that changed; CRITICAL when they are the safe
  values of a device the safe state holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgeloop.drivers.health import HealthTracker
from edgeloop.drivers.points import PointMap, Quality
from edgeloop.priority import Priority
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record

TOPIC_VALUES = "field.values"
TOPIC_HEALTH = "field.health"
TOPIC_WRITE = "field.write"
HEALTH_REFRESH_S = 1.0  # a snapshot at least this often while anything moved

Values = list[list[Any]]  # [[index, value, quality], ...]
WriteHandler = Callable[[list[tuple[int, Any]]], None]

_GOOD = int(Quality.GOOD)
_STALE = int(Quality.STALE)


class RecordSink(Protocol):
    """Where a device's records go: the io process's way to the control process
    (``IoContext``), or the field bridge's own inbox for a device whose I/O runs in the
    control process (``FieldModel.local``)."""

    def send(self, record: Record) -> bool: ...


class DeviceChannel:
    """One device's way to the control process: values by group, and its health."""

    def __init__(
        self,
        context: RecordSink,
        device: str,
        driver: str,
        points: Sequence[PointMap],
        offline_after: int = 3,
    ) -> None:
        self.context = context
        self.device = device
        self.points = points
        self.health = HealthTracker(driver, offline_after)
        self._groups: dict[str, list[Any]] = {}  # the payload last sent, per group
        self._keys: dict[str, str] = {}
        self._health_sent_at = 0.0
        self._health_moved = False

    def publish(self, group: str, values: Values) -> None:
        """Send the current values of every point of ``group``: ``[[index, value,
        quality], ...]``."""
        qualities = [q for _, _, q in values]
        uniform = (
            qualities[0] if qualities and qualities.count(qualities[0]) == len(values) else None
        )
        self.publish_block(
            group,
            [i for i, _, _ in values],
            [v for _, v, _ in values],
            qualities if uniform is None else uniform,
        )

    def publish_block(
        self, group: str, indices: list[int] | int, values: list[Any], quality: list[int] | int
    ) -> None:
        """``publish`` for drivers that read many points at once, in the wire's form:
        ``indices`` a list or the first of consecutive ones, ``quality`` a list or one
        for all."""
        payload = [indices, values, quality]
        self._groups[group] = payload
        key = self._keys.get(group)
        if key is None:
            key = self._keys[group] = f"{self.device}/{group}"
        self.context.send(Record(TOPIC_VALUES, key, Priority.NORMAL, payload))

    def mark_stale(self, group: str | None = None) -> None:
        """The values of ``group`` (or of every group) are no longer current."""
        names = list(self._groups) if group is None else [group]
        for name in names:
            sent = self._groups.get(name)
            if sent is None:
                continue
            indices, values, quality = sent
            if isinstance(quality, int):
                if quality == _GOOD:
                    self.publish_block(name, indices, values, _STALE)
            elif _GOOD in quality:
                stale = [_STALE if q == _GOOD else q for q in quality]
                self.publish_block(name, indices, values, stale)

    def good(self, rtt_s: float, now: float | None = None) -> None:
        """A good exchange; ``now``: its unix time (None: now)."""
        self.health.good(rtt_s, now)
        self._health_moved = True
        self.publish_health()

    def error(self, kind: Any, detail: str) -> None:
        was_usable = self.health.usable
        self.health.error(kind, detail)
        if was_usable and not self.health.usable:
            self.mark_stale()
        self._health_moved = True
        self.publish_health()

    def publish_health(self, now: float | None = None) -> None:
        """Send the health snapshot if it changed, or now and then while it moves."""
        now = time.monotonic() if now is None else now
        due = self._health_moved and now - self._health_sent_at >= HEALTH_REFRESH_S
        if self.health.changed or due:
            self._health_sent_at = now
            self._health_moved = False
            self.context.send(
                Record(TOPIC_HEALTH, self.device, Priority.NORMAL, self.health.snapshot())
            )


def on_writes(
    context: IoContext,
    handlers: dict[str, WriteHandler],
    *,
    safe_handlers: dict[str, WriteHandler] | None = None,
) -> None:
    """Route ``field.write`` records to the handler of the device they name: CRITICAL
    ones (the safe values) to its ``safe_handlers`` entry when there is one, for a driver
    that would otherwise queue them behind its polls."""

    def route(record: Record) -> None:
        handler = handlers.get(record.key)
        if safe_handlers is not None and record.priority == Priority.CRITICAL:
            handler = safe_handlers.get(record.key, handler)
        if handler is None:
            return
        try:
            writes = [(int(index), value) for index, value in record.payload]
        except (TypeError, ValueError):
            return  # not from our control process: nothing to write
        handler(writes)

    context.on_topic(TOPIC_WRITE, route)
