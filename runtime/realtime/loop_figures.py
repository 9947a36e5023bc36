"""The control process's figures for ``/metrics``, in the heartbeat block's figure slots.

The heartbeat block is the one way the control loop's figures leave the control
process (the supervisor's status line reads its slots; the io process's ``/metrics``
and ``/healthz`` read them too): no second channel, nothing the io process has to ask
for while the loop may be the thing that is stuck.

``edgeloop.realtime.figure_writer`` fills them in the control process;
``FigureReader`` (io side) turns them back into plain values. This module is the
layout of ``Heartbeats.figures``:

- ``Figure`` slots: single counts and states;
- two histograms (the loop's lateness, its tick work), each the counts below every
  ``HISTOGRAM_EDGES_US``, then the count and the sum in µs;
- per timed set and system of FixedUpdate and Update: runs, total ns, max ns.

The names of the timed sets and systems are written once, before the first tick, to
``Heartbeats.figure_names`` as JSON, its length (``Figure.NAMES_BYTES``) last: a reader
that sees no length has nothing to read yet, and one that read the text torn (stores
reordered on a weakly ordered CPU) cannot parse it and reads it again next time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from edgeloop.alarms import AlarmState
from edgeloop.realtime.heartbeat import FIGURE_SLOTS, Heartbeats
from edgeloop.realtime.loop_stats import on_bin_edge

# Prometheus "le" edges; each on a bin edge of LoopStats' histogram, so exact
HISTOGRAM_EDGES_US = (
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
)  # fmt: skip
ALARM_STATES = tuple(AlarmState)


class Figure(IntEnum):
    SKIPPED_TICKS = 0
    UPDATE_PASSES = 1
    UPDATE_DEFERRED = 2
    ESTOP = 3  # 0: no e-stop section; 1: released; 2: pressed
    ESTOP_PRESSES = 4
    # The control process's outboxes to the io workers: records dropped, summed
    TO_IO_CONFLATED = 5
    TO_IO_DROPPED_LOW = 6
    TO_IO_DROPPED_URGENT = 7
    TIMED = 8  # how many sets and systems are timed (and named)
    NAMES_BYTES = 9  # 0 until the names are written
    ALARMS = 10  # then one slot per AlarmState, in ALARM_STATES order


_HISTOGRAM_SLOTS = len(HISTOGRAM_EDGES_US) + 2
LATENESS = Figure.ALARMS + len(ALARM_STATES)
TICK_WORK = LATENESS + _HISTOGRAM_SLOTS
TIMINGS = TICK_WORK + _HISTOGRAM_SLOTS
MAX_TIMED = (FIGURE_SLOTS - TIMINGS) // 3
assert all(on_bin_edge(edge) for edge in HISTOGRAM_EDGES_US)


@dataclass(frozen=True, slots=True)
class Timed:
    """A set (``system`` None) or a system whose run times are kept."""

    schedule: str
    set: str
    system: str | None


@dataclass(frozen=True, slots=True)
class HistogramFigures:
    edges_s: tuple[float, ...]
    below: list[int]  # values below each edge
    count: int
    total_s: float


@dataclass(frozen=True, slots=True)
class TimingFigures:
    timed: Timed
    runs: int
    total_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class LoopFigures:
    skipped_ticks: int
    update_passes: int
    update_deferred: int
    estop_pressed: bool | None  # None: no e-stop section
    estop_presses: int
    to_io_dropped: dict[str, int]  # by why: "conflated", "dropped_low", "dropped_urgent"
    alarms: dict[str, int]  # by AlarmState value
    lateness: HistogramFigures
    tick_work: HistogramFigures
    timings: list[TimingFigures]


class FigureReader:
    """Io side: the figures in ``heartbeats``, the names parsed once they are there."""

    def __init__(self, heartbeats: Heartbeats) -> None:
        self.heartbeats = heartbeats
        self._names: list[Timed] | None = None

    def read(self) -> LoopFigures:
        figures = self.heartbeats.figures
        estop = figures[Figure.ESTOP]
        return LoopFigures(
            skipped_ticks=figures[Figure.SKIPPED_TICKS],
            update_passes=figures[Figure.UPDATE_PASSES],
            update_deferred=figures[Figure.UPDATE_DEFERRED],
            estop_pressed=None if estop == 0 else estop == 2,
            estop_presses=figures[Figure.ESTOP_PRESSES],
            to_io_dropped={
                "conflated": figures[Figure.TO_IO_CONFLATED],
                "dropped_low": figures[Figure.TO_IO_DROPPED_LOW],
                "dropped_urgent": figures[Figure.TO_IO_DROPPED_URGENT],
            },
            alarms={
                state.value: figures[Figure.ALARMS + index]
                for index, state in enumerate(ALARM_STATES)
            },
            lateness=_read_histogram(figures, LATENESS),
            tick_work=_read_histogram(figures, TICK_WORK),
            timings=self._timings(figures),
        )

    def _timings(self, figures: memoryview) -> list[TimingFigures]:
        names = self._read_names()
        return [
            TimingFigures(timed, figures[base], figures[base + 1] / 1e9, figures[base + 2] / 1e9)
            for timed, base in zip(names, range(TIMINGS, TIMINGS + 3 * len(names), 3), strict=True)
        ]

    def _read_names(self) -> list[Timed]:
        if self._names is None:
            figures = self.heartbeats.figures
            size, timed = figures[Figure.NAMES_BYTES], figures[Figure.TIMED]
            if size == 0:
                return []  # the control process has not started its loop yet
            try:
                names = json.loads(bytes(self.heartbeats.figure_names[:size]))
                self._names = [Timed(*entry) for entry in names[:timed]]
            except (ValueError, TypeError):
                return []  # caught mid-write on a weakly ordered CPU: the next read
        return self._names


def _read_histogram(figures: memoryview, base: int) -> HistogramFigures:
    edges = len(HISTOGRAM_EDGES_US)
    return HistogramFigures(
        edges_s=tuple(edge / 1e6 for edge in HISTOGRAM_EDGES_US),
        below=[figures[base + i] for i in range(edges)],
        count=figures[base + edges],
        total_s=figures[base + edges + 1] / 1e6,
    )
