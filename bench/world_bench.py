"""World benchmark: control-tick throughput, ``changed=`` queries and field-write cost.

Three questions decide whether the kernel fits a 100 Hz loop on an edge box:

1. How long does one FixedUpdate tick take with realistic control work (simulated sensor
   read, low-pass filter, P-controller, actuator copy) over 1 000 and 10 000 entities?
2. Does a ``changed=`` query really cost O(changes)? Measured against a full scan of the
   same component type in the same run, with 1 % of the entities written per tick.
3. What does automatic change detection cost per field write, next to a plain
   ``__slots__`` attribute write?

Usage::

    python bench/world_bench.py [--duration 5] [--json bench/results/world_bench.json]

``--duration`` is the wall-time budget for all cases together (world setup included);
a readable table goes to stdout, and the JSON to ``--json`` or, without it, after the
table.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import emit, machine_description

from edgeloop import (
    ActuatorOutput,
    App,
    Component,
    ControlLogic,
    DataProcessing,
    FixedUpdate,
    SensorInput,
    Time,
    World,
)

SIZES = (1_000, 10_000)
BATCHES = 7  # tick batches per size; the median batch is reported
WARMUP_SHARE = 0.15  # of a tick case's budget, also used to calibrate the batch length
MIN_SAMPLES = 3  # a median of fewer is not worth printing, even on a tiny budget
CHANGED_SHARE = 0.01  # fraction of entities the writer touches per tick
WRITES_PER_PASS = 1_000  # field writes per timed pass of the write micro-benchmark

# Weights of the cases in the --duration budget: ticks at 10k entities are the slowest
# and the most interesting, the write micro-benchmark converges fast.
FIELD_WRITE_WEIGHT = 1.0
TICK_WEIGHT = 3.0
SCAN_WEIGHT = 2.0

# Control parameters of the simulated tank: with these the P-loop settles around 0.7 m
# with a valve command well inside (0, 1), so no write is swallowed by a clamp and every
# field really changes every tick.
INFLOW = 1.0
LEAK = 0.2
KP = 0.5
SETPOINT = 1.0
FILTER_ALPHA = 0.2
# A prime-length noise table, read at a per-entity phase: every entity sees a different,
# deterministic sequence and no tick repeats the previous tick's value.
NOISE = tuple(0.01 * math.sin(i * 0.7) for i in range(97))


# -- components of the control world ------------------------------------------------------


class Tank(Component):
    """The simulated process behind the sensor (stands in for the field device)."""

    level_m: float = 0.0
    phase: int = 0


class LevelSensor(Component):
    raw_m: float = 0.0


class FilteredLevel(Component):
    level_m: float = 0.0


class LevelController(Component):
    setpoint_m: float = SETPOINT
    kp: float = KP
    output: float = 0.0


class Valve(Component):
    command: float = 0.0


class Reading(Component):
    """The component of the change-detection world: written for 1 % of entities per tick."""

    value: float = 0.0


class PlainReading:
    """The same record without change detection: what a field write costs at minimum."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


# -- the four control systems, one per FixedUpdate set ------------------------------------


def read_sensors(world: World) -> None:
    """SensorInput: advance the simulated tank one step, then 'measure' it with noise."""
    time_ = world.resource(Time)
    tick, dt = time_.tick, time_.delta
    noise, period = NOISE, len(NOISE)
    for tank, sensor, valve in world.query(Tank, LevelSensor, Valve):
        tank.level_m += dt * (INFLOW * valve.command - LEAK * tank.level_m)
        sensor.raw_m = tank.level_m + noise[(tick + tank.phase) % period]


def filter_levels(world: World) -> None:
    """DataProcessing: first-order low-pass, the usual first stage after a noisy sensor."""
    for sensor, filtered in world.query(LevelSensor, FilteredLevel):
        filtered.level_m += FILTER_ALPHA * (sensor.raw_m - filtered.level_m)


def control_levels(world: World) -> None:
    """ControlLogic: proportional controller, clamped to the valve's 0..1 range."""
    for filtered, ctl in world.query(FilteredLevel, LevelController):
        out = ctl.kp * (ctl.setpoint_m - filtered.level_m)
        ctl.output = min(1.0, max(0.0, out))


def drive_valves(world: World) -> None:
    """ActuatorOutput: copy the controller output to the actuator a driver would write."""
    for ctl, valve in world.query(LevelController, Valve):
        valve.command = ctl.output


def control_app(entities: int) -> App:
    app = App(rate_hz=100)
    for i in range(entities):
        app.world.spawn(
            Tank(phase=i % len(NOISE)), LevelSensor(), FilteredLevel(), LevelController(), Valve()
        )
    app.add_systems(FixedUpdate, read_sensors, in_set=SensorInput)
    app.add_systems(FixedUpdate, filter_levels, in_set=DataProcessing)
    app.add_systems(FixedUpdate, control_levels, in_set=ControlLogic)
    app.add_systems(FixedUpdate, drive_valves, in_set=ActuatorOutput)
    return app


# -- budget and timing helpers ------------------------------------------------------------


class Budget:
    """Hands out slices of one wall-clock budget, so overruns and setup time are absorbed.

    Each case gets its weight's share of what is *left*, not of the total: a case that
    overran (or a slow world setup) shrinks the later ones instead of the total.
    """

    def __init__(self, seconds: float, weights: Sequence[float]) -> None:
        self._deadline = time.perf_counter() + seconds
        self._weight_left = sum(weights)

    def take(self, weight: float) -> float:
        left = max(0.0, self._deadline - time.perf_counter())
        share = left * weight / self._weight_left if self._weight_left > 0 else 0.0
        self._weight_left -= weight
        return share


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Freeze the set-up world out of the collector, as the control process does.

    DESIGN.md: the control process runs with the gc frozen, so a collection does not walk
    every component each time. Unfrozen afterwards so the finished world can be freed.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def median_us(samples_s: Sequence[float]) -> float:
    return statistics.median(samples_s) * 1e6


# -- case 1: tick throughput --------------------------------------------------------------


@dataclass
class TickResult:
    us_per_tick: float
    ticks_per_s: float
    ticks_timed: int
    changed_fraction: float  # of valves re-stamped in the last tick: proof the writes bite


def time_ticks(app: App, budget_s: float) -> TickResult:
    """Median µs per tick over BATCHES batches sized to fill the budget after a warm-up."""
    start = time.perf_counter()
    deadline = start + budget_s
    app.startup()
    # Warm-up: the first ticks fill caches and grow the stamp dicts; they also give the
    # per-tick cost that sizes the batches.
    warm, warm_until = 0, start + budget_s * WARMUP_SHARE
    while warm < MIN_SAMPLES or time.perf_counter() < warm_until:
        app.tick()
        warm += 1
    per_tick = (time.perf_counter() - start) / warm
    left = max(0.0, deadline - time.perf_counter())
    ticks_per_batch = max(1, int(left / BATCHES / per_tick))
    batches: list[float] = []
    while len(batches) < BATCHES:
        t0 = time.perf_counter()
        for _ in range(ticks_per_batch):
            app.tick()
        batches.append((time.perf_counter() - t0) / ticks_per_batch)
        if len(batches) >= MIN_SAMPLES and time.perf_counter() > deadline:
            break
    us = median_us(batches)
    return TickResult(
        us_per_tick=us,
        ticks_per_s=1e6 / us,
        ticks_timed=ticks_per_batch * len(batches),
        changed_fraction=last_tick_changed_fraction(app.world),
    )


def last_tick_changed_fraction(world: World) -> float:
    # drive_valves is the last system of a tick and each system run bumps change_tick by
    # one, so its writes of the last tick carry exactly the current change_tick.
    since = world.change_tick - 1
    changed = len(world.query(Valve, changed=(Valve,), since=since))
    return changed / max(1, len(world.query(Valve)))


# -- case 2: changed= query vs full scan --------------------------------------------------


@dataclass
class ScanProbe:
    """A DataProcessing system timing both ways of finding what the writer touched.

    It runs inside the schedule, so the ``changed=`` query uses the real cursor (this
    system's last run) rather than a hand-picked ``since``. The two are timed in
    alternating order, so neither always runs with the other's data in cache.
    """

    changed_s: list[float] = field(default_factory=list)
    full_s: list[float] = field(default_factory=list)
    changed_rows: list[int] = field(default_factory=list)
    total: float = 0.0  # consumed, so neither loop body is dead code

    def run(self, world: World) -> None:
        if len(self.changed_s) % 2:
            self._full_scan(world)
            self._changed_query(world)
        else:
            self._changed_query(world)
            self._full_scan(world)

    def _changed_query(self, world: World) -> None:
        acc, rows = 0.0, 0
        t0 = time.perf_counter()
        for reading in world.query(Reading, changed=(Reading,)):
            acc += reading.value
            rows += 1
        self.changed_s.append(time.perf_counter() - t0)
        self.changed_rows.append(rows)
        self.total += acc

    def _full_scan(self, world: World) -> None:
        # The naive way: look at every entity's reading, as if comparing with last tick.
        acc = 0.0
        t0 = time.perf_counter()
        for reading in world.query(Reading):
            acc += reading.value
        self.full_s.append(time.perf_counter() - t0)
        self.total += acc

    def reset(self) -> None:
        self.changed_s.clear()
        self.full_s.clear()
        self.changed_rows.clear()


def rotating_writer(entities: list[int]) -> Callable[[World], None]:
    """SensorInput system: a driver updating 1 % of its points per tick, in rotation."""
    per_tick = max(1, round(len(entities) * CHANGED_SHARE))

    def write_readings(world: World) -> None:
        tick = world.resource(Time).tick
        start = (tick * per_tick) % len(entities)
        for entity in entities[start : start + per_tick]:
            # The tick number is new every time a point comes round: a genuine change.
            world.get(entity, Reading).value = float(tick)

    return write_readings


@dataclass
class ScanResult:
    changed_query_us: float
    full_scan_us: float
    changed_rows: float
    calls: int


def time_changed_query(entities: int, budget_s: float) -> ScanResult:
    """Median µs of a ``changed=`` query vs a full scan, one sample of each per tick."""
    deadline = time.perf_counter() + budget_s
    app = App(rate_hz=100)
    ids = [app.world.spawn(Reading()) for _ in range(entities)]
    probe = ScanProbe()
    app.add_systems(FixedUpdate, rotating_writer(ids), in_set=SensorInput)
    app.add_systems(FixedUpdate, probe.run, in_set=DataProcessing)
    with frozen_gc():
        app.startup()
        # The probe's first run sees every entity as changed (nothing seen yet): drop it
        # and a few more so that both paths are warm.
        for _ in range(MIN_SAMPLES):
            app.tick()
        probe.reset()
        while len(probe.changed_s) < MIN_SAMPLES or time.perf_counter() < deadline:
            app.tick()
    return ScanResult(
        changed_query_us=median_us(probe.changed_s),
        full_scan_us=median_us(probe.full_s),
        changed_rows=float(statistics.median(probe.changed_rows)),
        calls=len(probe.changed_s),
    )


# -- case 3: the price of a write-through field -------------------------------------------


def write_fields(
    targets: Sequence[Any], values_a: Sequence[float], values_b: Sequence[float]
) -> None:
    # Two passes with different values: every single write is a real change.
    for target, value in zip(targets, values_a, strict=True):
        target.value = value
    for target, value in zip(targets, values_b, strict=True):
        target.value = value


def loop_only(targets: Sequence[Any], values_a: Sequence[float], values_b: Sequence[float]) -> None:
    # The same loops without the write: subtracted, so only the write itself is counted.
    for _target, _value in zip(targets, values_a, strict=True):
        pass
    for _target, _value in zip(targets, values_b, strict=True):
        pass


@dataclass
class WriteResult:
    field_write_ns: float
    field_write_unchanged_ns: float
    plain_slot_write_ns: float


def time_field_writes(budget_s: float) -> WriteResult:
    """ns per write: attached component (changing / same value) vs plain ``__slots__``.

    Writes go round WRITES_PER_PASS components of one World, like a system's loop, so the
    amortised cost of re-stamping a realistically sized stamp dict is included.
    """
    world = World()
    components = [Reading() for _ in range(WRITES_PER_PASS)]
    for component in components:
        world.spawn(component)
    plain = [PlainReading() for _ in range(WRITES_PER_PASS)]
    values_a = [float(i) for i in range(WRITES_PER_PASS)]
    values_b = [v + 0.5 for v in values_a]
    same = [0.25] * WRITES_PER_PASS
    write_fields(components, same, same)  # so the "unchanged" runs really write equal values
    cases: dict[str, tuple[Sequence[Any], Sequence[float], Sequence[float]]] = {
        "component": (components, values_a, values_b),
        "unchanged": (components, same, same),
        "plain": (plain, values_a, values_b),
    }
    samples: dict[str, list[float]] = {name: [] for name in (*cases, "loop")}
    deadline = time.perf_counter() + budget_s
    # Round-robin the variants, so a frequency change or a noisy neighbour hits them all.
    while len(samples["loop"]) < MIN_SAMPLES or time.perf_counter() < deadline:
        for name, (targets, a, b) in cases.items():
            samples[name].append(time_call(write_fields, targets, a, b))
        samples["loop"].append(time_call(loop_only, components, values_a, values_b))
    loop = statistics.median(samples["loop"])

    def per_write_ns(name: str) -> float:
        return max(0.0, statistics.median(samples[name]) - loop) / (2 * WRITES_PER_PASS) * 1e9

    return WriteResult(
        field_write_ns=per_write_ns("component"),
        field_write_unchanged_ns=per_write_ns("unchanged"),
        plain_slot_write_ns=per_write_ns("plain"),
    )


def time_call(fn: Callable[..., None], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# -- running and reporting ----------------------------------------------------------------


def cpu_model() -> str | None:
    """The CPU name from /proc/cpuinfo: "model name" on x86, "Model" on a Raspberry Pi."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    for key in ("model name", "Model", "Hardware"):
        for line in lines:
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def run(duration_s: float) -> dict[str, Any]:
    weights = [FIELD_WRITE_WEIGHT] + [TICK_WEIGHT, SCAN_WEIGHT] * len(SIZES)
    budget = Budget(duration_s, weights)
    writes = time_field_writes(budget.take(FIELD_WRITE_WEIGHT))
    rows = []
    for entities in SIZES:
        tick_budget = budget.take(TICK_WEIGHT)
        app = control_app(entities)
        with frozen_gc():
            ticks = time_ticks(app, tick_budget)
        del app
        scan = time_changed_query(entities, budget.take(SCAN_WEIGHT))
        rows.append(
            {
                "entities": entities,
                "us_per_tick": round(ticks.us_per_tick, 2),
                "ticks_per_s": round(ticks.ticks_per_s, 1),
                "changed_query_us": round(scan.changed_query_us, 2),
                "full_scan_us": round(scan.full_scan_us, 2),
                "ticks_timed": ticks.ticks_timed,
                "tick_changed_fraction": round(ticks.changed_fraction, 3),
                "changed_rows_per_call": scan.changed_rows,
                "scan_calls": scan.calls,
            }
        )
    return {
        "rows": rows,
        "field_write_ns": round(writes.field_write_ns, 1),
        "field_write_unchanged_ns": round(writes.field_write_unchanged_ns, 1),
        "plain_slot_write_ns": round(writes.plain_slot_write_ns, 1),
        "duration_s": duration_s,
        "python": platform.python_version(),
        "machine": machine_description(),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"edgeloop world bench: python {result['python']}, {result['machine']}",
        "4 systems (sensor, filter, P-control, actuator); changed= with 1 % written per tick",
        "",
        f"{'entities':>8}  {'µs/tick':>9}  {'ticks/s':>8}  {'100 Hz load':>11}  "
        f"{'changed= µs':>11}  {'full scan µs':>12}  {'ratio':>6}",
    ]
    for row in result["rows"]:
        load = row["us_per_tick"] / 10_000  # a 100 Hz tick has 10 000 µs
        ratio = row["full_scan_us"] / row["changed_query_us"] if row["changed_query_us"] else 0
        lines.append(
            f"{row['entities']:>8}  {row['us_per_tick']:>9.1f}  {row['ticks_per_s']:>8.1f}  "
            f"{load:>10.0%}  {row['changed_query_us']:>11.2f}  {row['full_scan_us']:>12.1f}  "
            f"{ratio:>5.1f}x"
        )
    plain = result["plain_slot_write_ns"]
    factor = f" ({result['field_write_ns'] / plain:.0f}x)" if plain > 0 else ""
    lines += [
        "",
        f"field write: component {result['field_write_ns']:.0f} ns{factor}, "
        f"same value {result['field_write_unchanged_ns']:.0f} ns, "
        f"plain __slots__ {plain:.0f} ns",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=5.0, help="total wall-time budget in s (default 5)"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if not args.duration > 0:
        parser.error("--duration must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args.duration)
    emit(format_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
