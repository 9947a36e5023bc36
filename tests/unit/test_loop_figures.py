"""The control process's figures for /metrics through the heartbeat block: what the
writer copies in the control process is what the io side reads back (a second mapping
of the same memfd, as the io process has), histogram buckets exact at their edges."""

from __future__ import annotations

from edgeloop import App, ControlLogic, FixedUpdate, SensorInput
from edgeloop.alarms import Alarms, Severity
from edgeloop.realtime.figure_writer import FigureWriter
from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.realtime.io_link import IoLink
from edgeloop.realtime.ipc import Record
from edgeloop.realtime.loop_figures import HISTOGRAM_EDGES_US, FigureReader, Timed
from edgeloop.realtime.loop_stats import Histogram, LoopStats, OverrunPolicy
from edgeloop.safety.estop import EStop, EStopConfig
from edgeloop.world import World


def read_level(world: World) -> None:
    pass


def run_pid(world: World) -> None:
    pass


def test_the_io_side_reads_what_the_control_side_wrote() -> None:
    app = App(rate_hz=100)
    app.add_systems(FixedUpdate, read_level, in_set=SensorInput)
    app.add_systems(FixedUpdate, run_pid, in_set=ControlLogic)
    app.add_systems(FixedUpdate, run_pid, in_set=ControlLogic)  # the same name twice
    estop = EStop(EStopConfig.model_construct(inputs=[]))
    app.insert_resource(estop)
    stats = LoopStats(period_s=0.01, policy=OverrunPolicy.WARN)
    for us in (5, 30, 30, 2_000, 40_000):
        stats.lateness.record(us)
    stats.skipped_ticks, stats.update_deferred = 3, 2
    link = IoLink()
    link.outboxes[0].dropped_low = 4
    heartbeats = Heartbeats()
    writer = FigureWriter(heartbeats, app, stats, link)
    app.run_for(7)
    alarms = app.world.resource(Alarms)
    alarms.activate("watchdog:plc1", "silent", Severity.FAULT, 1)
    alarms.activate("interlock:door", "open", Severity.FAULT, 1)
    alarms.acknowledge("interlock:door", "ann", 2)
    estop.pressed, estop.presses = True, 1
    writer.write()
    mapped = Heartbeats(heartbeats.fd)  # as the io process maps it
    try:
        figures = FigureReader(mapped).read()
    finally:
        mapped.unmap()
        heartbeats.close()
    assert (figures.skipped_ticks, figures.update_deferred) == (3, 2)
    assert figures.estop_pressed is True and figures.estop_presses == 1
    assert figures.to_io_dropped == {"conflated": 0, "dropped_low": 4, "dropped_urgent": 0}
    assert figures.alarms == {
        "active_unacked": 1, "active_acked": 1, "cleared_unacked": 0, "normal": 0,
    }  # fmt: skip
    below = dict(zip(HISTOGRAM_EDGES_US, figures.lateness.below, strict=True))
    assert (below[10], below[25], below[50], below[2500], below[50_000]) == (1, 1, 3, 4, 5)
    assert figures.lateness.count == 5 and figures.lateness.total_s == 42_065 / 1e6
    timed = {t.timed: t for t in figures.timings}
    fixed = "FixedUpdate"
    assert timed[Timed(fixed, "SensorInput", "read_level")].runs == 7
    assert timed[Timed(fixed, "ControlLogic", "run_pid")].runs == 7
    assert timed[Timed(fixed, "ControlLogic", "run_pid#2")].runs == 7, "a series each"
    assert timed[Timed(fixed, "ControlLogic", None)].runs == 7
    assert timed[Timed(fixed, "ControlLogic", None)].total_s > 0


def test_without_an_e_stop_section_or_a_started_loop_there_is_nothing_to_show() -> None:
    heartbeats = Heartbeats()
    try:
        figures = FigureReader(heartbeats).read()
    finally:
        heartbeats.close()
    assert figures.estop_pressed is None
    assert figures.timings == []
    assert figures.lateness.count == 0


def test_counts_below_an_edge_are_exact_in_each_range_of_bins() -> None:
    histogram = Histogram()
    for us in (999, 1000, 2499, 2500, 9_999, 10_000, 24_999, 25_000, 2_000_000):
        histogram.record(us)
    assert histogram.counts_below((1000, 2500, 10_000, 25_000, 1_000_000)) == [1, 3, 5, 7, 8]


def test_the_writer_copies_the_figures_of_the_io_links_outboxes_as_they_are_now() -> None:
    link = IoLink()
    outbox = link.outboxes[0]
    for value in range(3):
        outbox.put(Record("t", "same key", 2, value))  # NORMAL: the later replace the first
    heartbeats = Heartbeats()
    try:
        FigureWriter(heartbeats, App(), LoopStats(0.01, OverrunPolicy.WARN), link).write()
        assert FigureReader(heartbeats).read().to_io_dropped["conflated"] == 2
    finally:
        heartbeats.close()
