"""``/metrics``: the appliance in the Prometheus text format (prometheus-client).

Collected on each scrape in the io process, from:

- the heartbeat block: the control loop's slots and figures (``loop_figures``: its
  lateness and tick-work histograms, each set's and system's run times, the alarms, the
  e-stop, what its outboxes dropped), the safe state, the io links, and each io
  worker's drops on its way to the control process;
- the World mirror: each device's health and error counts;
- this io process's network providers: peers, messages in and out, drops and refusals;
- psutil: the CPU and memory of every edgeloop process (the supervisor and its
  children);
- the board: ``/sys/class/thermal`` zones and the Raspberry Pi firmware's throttling
  flags, each family left out where the platform has none.

docs/http.md has the table of families.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edgeloop.net.output_queue import CONFLATED, DROPPED_LOW, SENT
from edgeloop.realtime.heartbeat import Heartbeats, IoSlot, Slot
from edgeloop.realtime.loop_figures import FigureReader, HistogramFigures, LoopFigures
from edgeloop.safety.safe_state import KINDS, kinds_of
from edgeloop.web import board
from edgeloop.web.processes import EdgeloopProcesses

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECEIVED = "messages"  # the hub's count of messages accepted from peers
_DEVICE_STATES = ("connecting", "online", "degraded", "offline")
# A provider's counters other than these are events: refusals, cut-offs, renames
_NOT_REFUSALS = {RECEIVED, SENT, CONFLATED, DROPPED_LOW}

Mirror = Callable[[], Mapping[tuple[int, str], dict[str, Any]]]


class ApplianceCollector(Collector):
    def __init__(
        self,
        heartbeats: Heartbeats,
        mirror: Mirror,
        connections: Callable[[], Mapping[str, int]],
        network: Callable[[], Mapping[str, Counter[str]]],
    ) -> None:
        self.heartbeats = heartbeats
        self.figures = FigureReader(heartbeats)
        self.mirror = mirror
        self.connections = connections
        self.network = network
        self.processes = EdgeloopProcesses()

    def collect(self) -> Iterator[Metric]:
        figures = self.figures.read()
        yield from self._control(figures)
        yield from _timings(figures)
        yield from _safety(self.heartbeats, figures)
        yield from self._devices()
        yield from self._network(figures)
        yield from self.processes.families()
        yield from board.temperatures()
        yield from board.throttling()

    def _control(self, figures: LoopFigures) -> Iterator[Metric]:
        beats = self.heartbeats
        yield CounterMetricFamily(
            "edgeloop_control_ticks", "Fixed ticks the control loop ran",
            value=beats[Slot.CONTROL_TICKS],
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_control_overruns", "Ticks whose work ended past the next deadline",
            value=beats[Slot.CONTROL_OVERRUNS],
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_control_skipped_ticks", "Deadlines dropped after overruns",
            value=figures.skipped_ticks,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_control_update_passes", "Update passes run in the ticks' slack",
            value=figures.update_passes,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_control_update_deferred", "Update passes put off: too little slack",
            value=figures.update_deferred,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgeloop_control_lateness_p99_seconds", "The control loop's wake-up lateness, p99",
            value=beats[Slot.CONTROL_P99_LATENESS_NS] / 1e9,
        )  # fmt: skip
        yield _histogram(
            "edgeloop_control_lateness_seconds",
            "How late the control loop woke for each tick", figures.lateness,
        )  # fmt: skip
        yield _histogram(
            "edgeloop_control_tick_work_seconds",
            "How long each fixed tick's work took", figures.tick_work,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgeloop_io_links_up", "Io workers the control process has a channel to",
            value=beats[Slot.IO_LINKS_UP],
        )  # fmt: skip

    def _devices(self) -> Iterator[Metric]:
        mirror = self.mirror()
        names = {e: str(v.get("value")) for (e, c), v in mirror.items() if c == "Name"}
        state = GaugeMetricFamily(
            "edgeloop_device_state", "1 for the state a field device is in",
            labels=["device", "state"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            "edgeloop_device_errors", "Errors a field device's driver counted, by kind",
            labels=["device", "kind"],
        )  # fmt: skip
        for (entity, component), values in sorted(mirror.items()):
            if component != "DeviceHealth":
                continue
            device = names.get(entity, str(entity))
            for one in _DEVICE_STATES:
                state.add_metric([device, one], 1 if values.get("state") == one else 0)
            for kind, count in values.get("errors") or ():
                errors.add_metric([device, str(kind)], float(count))
        yield state
        yield errors

    def _network(self, figures: LoopFigures) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "edgeloop_connections", "Network peers connected, by provider", labels=["provider"]
        )
        for provider, count in sorted(self.connections().items()):
            connections.add_metric([provider], count)
        yield connections
        received = CounterMetricFamily(
            "edgeloop_messages_received", "Messages accepted from network peers",
            labels=["provider"],
        )  # fmt: skip
        sent = CounterMetricFamily(
            "edgeloop_messages_sent", "Messages sent (or queued) to network peers",
            labels=["provider"],
        )  # fmt: skip
        refused = CounterMetricFamily(
            "edgeloop_network_events",
            "What a provider counted besides traffic, by reason: connections accepted, "
            "messages refused (by protocol error), failed logins, peers cut off, types "
            "found by schema hash",
            labels=["provider", "reason"],
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "edgeloop_messages_dropped",
            "Messages and records dropped on their way, by path, reason and priority",
            labels=["path", "reason", "priority"],
        )  # fmt: skip
        for provider, counters in sorted(self.network().items()):
            received.add_metric([provider], counters[RECEIVED])
            sent.add_metric([provider], counters[SENT])
            dropped.add_metric([f"{provider}_output", "conflated", "normal"], counters[CONFLATED])
            dropped.add_metric([f"{provider}_output", "dropped", "low"], counters[DROPPED_LOW])
            for reason, count in sorted(counters.items()):
                if reason not in _NOT_REFUSALS:
                    refused.add_metric([provider, reason], count)
        beats = self.heartbeats
        to_control = (
            ("conflated", "normal", IoSlot.TO_CONTROL_CONFLATED),
            ("dropped", "low", IoSlot.TO_CONTROL_DROPPED_LOW),
            ("dropped", "critical_or_high", IoSlot.TO_CONTROL_DROPPED_URGENT),
        )
        for reason, priority, slot in to_control:
            dropped.add_metric(["io_to_control", reason, priority], beats.io_total(slot))
        dropped.add_metric(
            ["data_log", "dropped", "normal"], beats.io_total(IoSlot.DATA_LOG_DROPPED)
        )
        to_io = figures.to_io_dropped
        dropped.add_metric(["control_to_io", "conflated", "normal"], to_io["conflated"])
        dropped.add_metric(["control_to_io", "dropped", "low"], to_io["dropped_low"])
        dropped.add_metric(
            ["control_to_io", "dropped", "critical_or_high"], to_io["dropped_urgent"]
        )
        yield from (received, sent, dropped, refused)
        yield CounterMetricFamily(
            "edgeloop_data_log_samples_written", "Samples the data log committed",
            value=beats.io_total(IoSlot.DATA_LOG_WRITTEN),
        )  # fmt: skip


def _histogram(name: str, documentation: str, figures: HistogramFigures) -> Metric:
    buckets = [
        (repr(edge), float(below))
        for edge, below in zip(figures.edges_s, figures.below, strict=True)
    ]
    # Read while being written (once a second), the count may lag the buckets by a tick.
    total = max(figures.count, figures.below[-1] if figures.below else 0)
    buckets.append(("+Inf", float(total)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=figures.total_s)


def _timings(figures: LoopFigures) -> Iterator[Metric]:
    families = {}
    for kind, labels in (("set", ["schedule", "set"]), ("system", ["schedule", "set", "system"])):
        families[kind] = (
            CounterMetricFamily(
                f"edgeloop_{kind}_runs", f"Runs of each {kind} of FixedUpdate and Update",
                labels=labels,
            ),
            CounterMetricFamily(
                f"edgeloop_{kind}_run_seconds", f"Time each {kind} ran, in all", labels=labels
            ),
            GaugeMetricFamily(
                f"edgeloop_{kind}_run_max_seconds", f"The longest run of each {kind}",
                labels=labels,
            ),
        )  # fmt: skip
    for timing in figures.timings:
        timed = timing.timed
        kind = "set" if timed.system is None else "system"
        labels = [timed.schedule, timed.set, *([timed.system] if timed.system else [])]
        runs, seconds, longest = families[kind]
        runs.add_metric(labels, timing.runs)
        seconds.add_metric(labels, timing.total_s)
        longest.add_metric(labels, timing.max_s)
    for family in families.values():
        yield from family


def _safety(heartbeats: Heartbeats, figures: LoopFigures) -> Iterator[Metric]:
    held = set(kinds_of(heartbeats[Slot.SAFE_STATE]))
    safe = GaugeMetricFamily(
        "edgeloop_safe_state", "1 while a cause of this kind holds outputs safe",
        labels=["kind"],
    )  # fmt: skip
    for kind in (*KINDS, "other"):
        safe.add_metric([kind], 1 if kind in held else 0)
    yield safe
    if figures.estop_pressed is not None:
        yield GaugeMetricFamily(
            "edgeloop_estop_pressed", "1 while an e-stop input is pressed",
            value=1 if figures.estop_pressed else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_estop_presses", "E-stop presses that latched the safe state",
            value=figures.estop_presses,
        )  # fmt: skip
    alarms = GaugeMetricFamily(
        "edgeloop_alarms", "Alarms listed, by ISA-18.2 state", labels=["state"]
    )
    for state, count in figures.alarms.items():
        alarms.add_metric([state], count)
    yield alarms


def registry(collector: ApplianceCollector) -> CollectorRegistry:
    made = CollectorRegistry(auto_describe=False)
    made.register(collector)
    return made


def render(made: CollectorRegistry) -> bytes:
    return generate_latest(made)
