"""The control loop for the dashboard (``/api/loop`` and the ``loop`` topic of ``/ws``),
from the heartbeat block: ticks, the tick rate over the last second or so, lateness
p99, overruns, how long ago the last tick ended (a loop that stalls shows it here before
anything else), and the lateness histogram that ``/metrics`` has (``loop_figures``):
ticks per bucket, each bucket up to its edge."""

from __future__ import annotations

import time
from itertools import pairwise

from edgeloop.net.protocol import LatenessHistogram, LoopStatus
from edgeloop.realtime.heartbeat import Heartbeats, Slot
from edgeloop.realtime.loop_figures import FigureReader

RATE_WINDOW_S = 1.0  # the rate is measured over at least this long


class LoopStatusReader:
    def __init__(self, heartbeats: Heartbeats) -> None:
        self.heartbeats = heartbeats
        self.figures = FigureReader(heartbeats)
        self._sample = (time.monotonic(), heartbeats[Slot.CONTROL_TICKS])
        self._rate = 0.0

    def read(self) -> LoopStatus:
        beats = self.heartbeats
        now = time.monotonic()
        ticks = beats[Slot.CONTROL_TICKS]
        then, ticks_then = self._sample
        if now - then >= RATE_WINDOW_S:
            self._rate = (ticks - ticks_then) / (now - then)
            self._sample = (now, ticks)
        tick_ns = beats[Slot.CONTROL_TICK_NS]
        lateness = self.figures.read().lateness
        below = [0, *lateness.below, lateness.count]  # the last bucket: past every edge
        return LoopStatus(
            ticks=ticks,
            rate_hz=round(self._rate, 2),
            lateness_p99_us=round(beats[Slot.CONTROL_P99_LATENESS_NS] / 1000, 1),
            overruns=beats[Slot.CONTROL_OVERRUNS],
            last_tick_age_s=round(now - tick_ns / 1e9, 3) if tick_ns else None,
            safe_state=beats[Slot.SAFE_STATE] != 0,
            lateness_histogram=LatenessHistogram(
                edges_us=[round(edge * 1e6) for edge in lateness.edges_s],
                ticks=[later - earlier for earlier, later in pairwise(below)],
            ),
        )
