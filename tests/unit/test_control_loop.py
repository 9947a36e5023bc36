"""The control loop against the real monotonic clock, in this process."""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time

import pytest

from edgeloop import App, ControlLogic, FixedUpdate, HealthMonitoring, SensorInput, Shutdown, Update
from edgeloop.realtime.control_loop import ControlLoop, OverrunStop
from edgeloop.realtime.loop_stats import Histogram, LoopStats, OverrunPolicy
from edgeloop.world import World


def test_tick_count_matches_wall_time_without_drift() -> None:
    app = App(rate_hz=100)
    stamps: list[float] = []
    app.add_systems(FixedUpdate, lambda world: stamps.append(time.monotonic()), in_set=SensorInput)
    loop = ControlLoop(app, spin_s=0.0002)
    loop.run(max_ticks=300)
    loop.close()
    assert len(stamps) == 300
    # Offsets from the ideal grid; a drifting loop's later ticks sit further off than its
    # earlier ones. Medians, so one late wake-up on a loaded machine does not decide.
    offsets = [stamp - stamps[0] - i * 0.01 for i, stamp in enumerate(stamps)]
    first, last = statistics.median(offsets[:100]), statistics.median(offsets[-100:])
    assert abs(last - first) < 0.01 * 3.0, (first, last)  # 1 % of the 3 s run
    assert app.world.resource(LoopStats).lateness.count == 300


def test_a_readable_fd_is_handled_during_the_wait_not_at_the_next_tick() -> None:
    app = App(rate_hz=5)  # 200 ms between ticks
    loop = ControlLoop(app)
    read_fd, write_fd = os.pipe()
    handled_at_tick: list[int] = []

    def on_readable() -> None:
        os.read(read_fd, 1)
        handled_at_tick.append(app.time.tick)
        loop.request_stop()

    def poke(world: World) -> None:
        if app.time.tick == 2:
            threading.Timer(0.02, os.write, (write_fd, b"!")).start()

    loop.add_wake_source(read_fd, on_readable)
    app.add_systems(FixedUpdate, poke, in_set=SensorInput)
    loop.run(max_ticks=10)
    loop.close()
    assert handled_at_tick == [2], "handled before tick 3 was due"
    assert app.time.tick == 2


def test_stop_request_from_another_thread_runs_shutdown() -> None:
    app = App(rate_hz=100)
    shutdown: list[int] = []
    app.add_systems(Shutdown, lambda world: shutdown.append(app.time.tick))
    loop = ControlLoop(app)
    app.add_systems(
        FixedUpdate,
        lambda world: app.time.tick == 5 and loop.request_stop(),  # type: ignore[func-returns-value]
        in_set=ControlLogic,
    )
    loop.run()
    loop.close()
    assert shutdown == [5]


def _overrunning_app(rate_hz: float, slow_tick: int, stall_s: float) -> App:
    app = App(rate_hz=rate_hz)

    def slow(world: World) -> None:
        if app.time.tick == slow_tick:
            time.sleep(stall_s)  # the overrun under test, not a synchronisation

    app.add_systems(FixedUpdate, slow, in_set=ControlLogic)
    return app


def test_warn_policy_catches_up_missed_ticks() -> None:
    app = _overrunning_app(50, slow_tick=3, stall_s=0.07)  # 3.5 periods
    loop = ControlLoop(app, policy=OverrunPolicy.WARN)
    started = time.monotonic()
    loop.run(max_ticks=20)
    elapsed = time.monotonic() - started
    loop.close()
    assert loop.stats.overruns >= 1
    assert loop.stats.skipped_ticks == 0
    assert app.time.tick == 20
    assert elapsed == pytest.approx(19 * 0.02, abs=0.1), "caught up, did not stretch time"


def test_skip_policy_drops_missed_deadlines() -> None:
    app = _overrunning_app(50, slow_tick=3, stall_s=0.07)
    loop = ControlLoop(app, policy=OverrunPolicy.SKIP)
    loop.run(max_ticks=20)
    loop.close()
    assert loop.stats.overruns >= 1
    assert loop.stats.skipped_ticks >= 2
    assert app.time.tick == 20 - loop.stats.skipped_ticks


def test_safe_stop_policy_runs_shutdown_and_raises() -> None:
    app = _overrunning_app(50, slow_tick=3, stall_s=0.05)
    safe: list[bool] = []
    app.add_systems(Shutdown, lambda world: safe.append(True))
    loop = ControlLoop(app, policy=OverrunPolicy.SAFE_STOP)
    with pytest.raises(OverrunStop, match="tick 3 overran"):
        loop.run(max_ticks=20)
    loop.close()
    assert safe == [True]


def test_update_is_put_off_when_the_slack_is_shorter_than_its_budget() -> None:
    app = App(rate_hz=100)
    updates: list[int] = []
    app.add_systems(Update, lambda world: updates.append(1), in_set=HealthMonitoring)
    loop = ControlLoop(app, update_budget_s=0.05)  # more than a whole 10 ms period
    loop.run(max_ticks=10)
    loop.close()
    assert updates == []
    assert loop.stats.update_deferred > 0


def test_frozen_gc_is_enabled_again_after_the_run() -> None:
    app = App(rate_hz=200)
    enabled: list[bool] = []
    app.add_systems(FixedUpdate, lambda world: enabled.append(gc.isenabled()), in_set=SensorInput)
    loop = ControlLoop(app, gc_frozen=True)
    loop.run(max_ticks=5)
    loop.close()
    gc.unfreeze()
    assert enabled == [False] * 5
    assert gc.isenabled()


def test_histogram_percentiles() -> None:
    histogram = Histogram()
    for us in [*range(1, 991), *([5000] * 9), 250_000]:
        histogram.record(us)
    assert histogram.percentile(0.5) == 500
    assert histogram.percentile(0.99) == 990
    assert histogram.percentile(0.999) == 5000
    assert histogram.max_us == 250_000
    assert histogram.percentile(1.0) == 250_000


def test_loop_stats_keep_execution_time_per_set_and_per_system() -> None:
    app = App(rate_hz=100)

    def busy_controller(world: World) -> None:
        time.sleep(0.001)  # the work being timed

    app.add_systems(FixedUpdate, busy_controller, in_set=ControlLogic)
    loop = ControlLoop(app)
    loop.run(max_ticks=5)
    loop.close()
    work = loop.stats.summary()["work"]
    assert isinstance(work, dict)
    controller = work["systems"][
        "test_loop_stats_keep_execution_time_per_set_and_per_system.<locals>.busy_controller"
    ]
    assert controller["runs"] == 5 and controller["mean_us"] >= 1000
    assert work["sets"]["ControlLogic"]["mean_us"] >= controller["mean_us"]
    assert list(work["sets"]) == ["SensorInput", "DataProcessing", "ControlLogic", "ActuatorOutput"]
