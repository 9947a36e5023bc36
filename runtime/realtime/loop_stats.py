"""Loop statistics: how late the control loop wakes, how long its work takes, overruns.

Kept in the control process as the ``LoopStats`` resource, so systems, the dashboard and
the status line read the same figures. Recording is O(1) per tick with no allocation;
percentiles are computed on demand (in the slack, or by a reader).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeloop.schedule import Schedule

# Bin edges in µs: 1 µs steps to 1 ms, 10 µs to 10 ms, 1 ms to 1 s. Fine where good
# loops live, coarse where only "how bad" matters; ~2 900 ints in all.
_FINE_US = 1000
_MID_US = 10_000
_COARSE_US = 1_000_000
_BINS = _FINE_US + (_MID_US - _FINE_US) // 10 + (_COARSE_US - _MID_US) // 1000 + 1


def _bin(us: int) -> int:
    if us < _FINE_US:
        return max(us, 0)
    if us < _MID_US:
        return _FINE_US + (us - _FINE_US) // 10
    if us < _COARSE_US:
        return _FINE_US + (_MID_US - _FINE_US) // 10 + (us - _MID_US) // 1000
    return _BINS - 1


def on_bin_edge(us: int) -> bool:
    """Whether ``us`` is the lower edge of a bin, so counts below it are exact."""
    return _bin_floor_us(_bin(us)) == us


def _bin_floor_us(index: int) -> int:
    if index < _FINE_US:
        return index
    index -= _FINE_US
    if index < (_MID_US - _FINE_US) // 10:
        return _FINE_US + index * 10
    index -= (_MID_US - _FINE_US) // 10
    return _MID_US + index * 1000


class Histogram:
    """Counts of microsecond values in fixed bins, with exact max and sum."""

    __slots__ = ("count", "counts", "max_us", "total_us")

    def __init__(self) -> None:
        self.counts = [0] * _BINS
        self.count = 0
        self.max_us = 0
        self.total_us = 0

    def record(self, us: int) -> None:
        self.counts[_bin(us)] += 1
        self.count += 1
        self.total_us += us
        self.max_us = max(self.max_us, us)

    def counts_below(self, edges_us: tuple[int, ...]) -> list[int]:
        """How many values were below each of ``edges_us`` (ascending, each on a bin's
        lower edge: ``on_bin_edge``), in one pass over the bins."""
        below, seen, start = [], 0, 0
        for edge in edges_us:
            end = _bin(edge)
            seen += sum(self.counts[start:end])
            below.append(seen)
            start = end
        return below

    def percentile(self, fraction: float) -> int:
        """The lower edge of the bin holding that fraction of the samples (0 if empty)."""
        if self.count == 0:
            return 0
        target = fraction * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= target:
                return min(_bin_floor_us(index), self.max_us)
        return self.max_us

    def summary(self) -> dict[str, int]:
        return {
            "p50_us": self.percentile(0.50),
            "p99_us": self.percentile(0.99),
            "p999_us": self.percentile(0.999),
            "max_us": self.max_us,
            "samples": self.count,
        }


class OverrunPolicy(Enum):
    WARN = "warn"  # log (rate-limited) and run the missed ticks back to back
    SKIP = "skip"  # log and drop the missed deadlines: no burst, time falls behind
    SAFE_STOP = "safe_stop"  # run Shutdown (actuators safe) and exit non-zero


@dataclass(slots=True)
class LoopStats:
    """Resource: the control loop's timing, as measured by the loop itself."""

    period_s: float
    policy: OverrunPolicy
    lateness: Histogram = field(default_factory=Histogram)  # wake-up after the deadline
    tick_work: Histogram = field(default_factory=Histogram)  # FixedUpdate duration
    overruns: int = 0  # ticks whose work ended past the next deadline
    skipped_ticks: int = 0  # deadlines dropped under the skip policy
    update_passes: int = 0
    update_deferred: int = 0  # Update passes put off because the slack was too short
    work: Schedule | None = None  # FixedUpdate, whose per-set/per-system times are kept

    def summary(self) -> dict[str, object]:
        return {
            "work": {} if self.work is None else self.work.timings(),
            "rate_hz": round(1 / self.period_s, 3),
            "lateness": self.lateness.summary(),
            "tick_work": self.tick_work.summary(),
            "overruns": self.overruns,
            "skipped_ticks": self.skipped_ticks,
            "overrun_policy": self.policy.value,
        }
