"""Audit log benchmark: what an append costs the tick, and how soon an entry is durable.

Two phases on a real file in ``--dir`` (its filesystem decides the fsync cost):

1. paced, as the control loop appends: one ``command`` entry a 10 ms tick. Reported: the
   ``append`` call in the caller (µs p50/p99), the time from append to durable (to the
   end of the writer's fdatasync that covered the entry's line, ms p50/p99), and
   fdatasync alone.
2. sustained: append as fast as one thread can, backing off briefly when the queue is
   full. Reported: durable entries per second, entries per fdatasync, and the append
   call cost while the writer is busy.

    python bench/audit.py [--duration 10] [--json OUT] [--dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import emit, machine_description

from edgeloop.safety.audit import AuditLog

TICK_S = 0.010  # the paced phase appends once per 100 Hz tick
# ... after sleeping to SPIN_S before it and spinning, as the control loop does: right
# after a sleep this VM runs the first few µs of any code 5-10x slower (cold caches).
SPIN_S = 0.0002
FULL_BACKOFF_S = 0.0005  # the sustained producer's pause when the queue is full
FLUSH_S = 30.0
RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = {"connection": "tcp:7", "client": "robot-3", "role": "operator", "accepted": True}


class TimedSync:
    """fdatasync, timed, and how much of the file each one made durable, when."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.durable: list[tuple[int, int]] = []  # (file size, perf_counter_ns after)

    def __call__(self, fd: int) -> None:
        start = time.perf_counter_ns()
        os.fdatasync(fd)
        end = time.perf_counter_ns()
        self.ms.append((end - start) / 1e6)
        self.durable.append((os.fstat(fd).st_size, end))


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Paced:
    call_us: list[float] = field(default_factory=list)  # audit.append in the caller
    bare_us: list[float] = field(default_factory=list)  # the same tuple onto a bare deque
    durable_ms: list[float] = field(default_factory=list)  # append -> its fdatasync done


def paced(audit: AuditLog, sync: TimedSync, seconds: float) -> Paced:
    """One entry a tick into a log that was empty; on the other ticks the same entry onto
    a bare deque, which is what a queue costs at all in that place on this machine."""
    result, bare = Paced(), deque[tuple[int, str, dict[str, object]]]()
    appended_ns: list[int] = []
    start = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < seconds:
        before = time.perf_counter_ns()
        if tick % 2:
            bare.append((time.time_ns(), "command", dict(what="robot.MoveTo", tick=tick, **FIELDS)))
            result.bare_us.append((time.perf_counter_ns() - before) / 1e3)
        else:
            audit.append("command", what="robot.MoveTo", tick=tick, **FIELDS)
            result.call_us.append((time.perf_counter_ns() - before) / 1e3)
            appended_ns.append(before)
        tick += 1
        wake_at = start + tick * TICK_S
        time.sleep(max(0.0, wake_at - SPIN_S - time.perf_counter()))
        while time.perf_counter() < wake_at:
            pass
    assert audit.flush(FLUSH_S), audit.last_error
    result.durable_ms = durable_times(audit.path, appended_ns, sync)
    return result


def durable_times(path: Path, appended_ns: list[int], sync: TimedSync) -> list[float]:
    """For each line of ``path`` (appended at ``appended_ns``), the ms until the first
    fdatasync that left the file at least as long as the line's end."""
    ends = itertools.accumulate(len(line) for line in path.read_bytes().splitlines(True))
    syncs = iter(sync.durable)
    size, synced_ns = next(syncs)
    durable_ms: list[float] = []
    for end, appended in zip(ends, appended_ns, strict=True):
        while size < end:
            size, synced_ns = next(syncs)
        durable_ms.append((synced_ns - appended) / 1e6)
    return durable_ms


def sustained(audit: AuditLog, seconds: float) -> tuple[float, list[float], int]:
    """Durable entries per second, append costs (µs) and entries dropped on a full queue
    (each followed by a back-off, so the figure is what the writer sustains)."""
    call_us: list[float] = []
    durable_before, dropped_before = audit.durable, audit.dropped
    clock: Callable[[], int] = time.perf_counter_ns
    start = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < seconds:
        before = clock()
        accepted = audit.append("command", what="robot.MoveTo", tick=tick, **FIELDS)
        call_us.append((clock() - before) / 1e3)
        if accepted:
            tick += 1
        else:
            time.sleep(FULL_BACKOFF_S)
    assert audit.flush(FLUSH_S), audit.last_error
    elapsed = time.perf_counter() - start
    return (audit.durable - durable_before) / elapsed, call_us, audit.dropped - dropped_before


def filesystem(path: Path) -> str:
    """The type and device of the mount that holds ``path``."""
    best, found = "", "unknown"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mount, kind, *_ = line.split()
        inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
        if inside and len(mount) >= len(best):
            best, found = mount, f"{kind} ({device} on {mount})"
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.dir or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=base))
    sync = TimedSync()
    try:
        with AuditLog.open(state_dir, sync=sync) as audit:
            steady = paced(audit, sync, args.duration / 2)
            paced_syncs = len(sync.ms)
            rate, busy_us, dropped = sustained(audit, args.duration / 2)
            busy_syncs = len(sync.ms) - paced_syncs
            durable = audit.durable
    finally:
        shutil.rmtree(state_dir)
    return {
        "machine": machine_description(),
        "filesystem": filesystem(state_dir.resolve()),
        "duration_s": args.duration,
        "paced_entries": len(steady.call_us),
        "append_us_p50": percentile(steady.call_us, 0.50),
        "append_us_p99": percentile(steady.call_us, 0.99),
        "bare_append_us_p50": percentile(steady.bare_us, 0.50),
        "bare_append_us_p99": percentile(steady.bare_us, 0.99),
        "durable_ms_p50": percentile(steady.durable_ms, 0.50),
        "durable_ms_p99": percentile(steady.durable_ms, 0.99),
        "fsync_ms_p50": percentile(sync.ms[:paced_syncs], 0.50),
        "fsync_ms_p99": percentile(sync.ms[:paced_syncs], 0.99),
        "appends_per_s": rate,
        "entries_per_fsync": (durable - len(steady.call_us)) / max(1, busy_syncs),
        "busy_append_us_p50": percentile(busy_us, 0.50),
        "busy_append_us_p99": percentile(busy_us, 0.99),
        "dropped_when_full": dropped,
    }


def table(result: dict[str, Any]) -> str:
    def figure(key: str, digits: int = 1) -> str:
        value = result[key]
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        ("append call, paced (µs)", figure("append_us_p50"), figure("append_us_p99")),
        (
            "  bare deque append there (µs)",
            figure("bare_append_us_p50"),
            figure("bare_append_us_p99"),
        ),
        ("append -> durable (ms)", figure("durable_ms_p50", 2), figure("durable_ms_p99", 2)),
        ("fdatasync (ms)", figure("fsync_ms_p50", 2), figure("fsync_ms_p99", 2)),
        (
            "append call, writer busy (µs)",
            figure("busy_append_us_p50"),
            figure("busy_append_us_p99"),
        ),
    ]
    lines = [
        f"audit log on {result['filesystem']}; {result['machine']}",
        f"{'':32}{'p50':>10}{'p99':>10}",
        *(f"{name:32}{p50:>10}{p99:>10}" for name, p50, p99 in rows),
        f"sustained: {result['appends_per_s']:.0f} durable appends/s, "
        f"{result['entries_per_fsync']:.0f} entries per fdatasync, "
        f"{result['dropped_when_full']} refused on a full queue (then backed off)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds, both phases")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--dir", type=Path, help="where the log is written (default: bench/results/)"
    )
    args = parser.parse_args()
    result = run(args)
    emit(table(result), result, args.json)


if __name__ == "__main__":
    main()
