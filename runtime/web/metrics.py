"""``/metrics``: the appliance in the Prometheus text format (prometheus-client).

Collected on each scrape in the io process, from the heartbeat block (the control
loop, the safe state, the io links), the World mirror (devices' health and error
counts), this io process's own connections, and psutil for the CPU and memory of every
edgeloop process (the supervisor and its children), plus the board's temperature where
``/sys/class/thermal`` has one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeloop.realtime.heartbeat import Heartbeats, Slot
from edgeloop.safety.safe_state import KINDS, kinds_of

THERMAL = Path("/sys/class/thermal")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DEVICE_STATES = ("connecting", "online", "degraded", "offline")


class ApplianceCollector(Collector):
    def __init__(
        self,
        heartbeats: Heartbeats,
        mirror: Callable[[], Mapping[tuple[int, str], dict[str, Any]]],
        connections: Callable[[], Mapping[str, int]],
    ) -> None:
        self.heartbeats = heartbeats
        self.mirror = mirror
        self.connections = connections
        self._processes: dict[int, psutil.Process] = {}

    def collect(self) -> Iterator[Metric]:
        yield from self._control()
        yield from self._devices()
        connections = GaugeMetricFamily(
            "edgeloop_connections", "Network peers connected, by provider", labels=["provider"]
        )
        for provider, count in sorted(self.connections().items()):
            connections.add_metric([provider], count)
        yield connections
        yield from self._processes_metrics()
        yield from _temperatures()

    def _control(self) -> Iterator[Metric]:
        beats = self.heartbeats
        yield CounterMetricFamily(
            "edgeloop_control_ticks", "Fixed ticks the control loop ran",
            value=beats[Slot.CONTROL_TICKS],
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgeloop_control_overruns", "Ticks whose work ended past the next deadline",
            value=beats[Slot.CONTROL_OVERRUNS],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgeloop_control_lateness_p99_seconds", "The control loop's wake-up lateness, p99",
            value=beats[Slot.CONTROL_P99_LATENESS_NS] / 1e9,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "edgeloop_io_links_up", "Io workers the control process has a channel to",
            value=beats[Slot.IO_LINKS_UP],
        )  # fmt: skip
        held = set(kinds_of(beats[Slot.SAFE_STATE]))
        safe = GaugeMetricFamily(
            "edgeloop_safe_state", "1 while a cause of this kind holds outputs safe",
            labels=["kind"],
        )  # fmt: skip
        for kind in (*KINDS, "other"):
            safe.add_metric([kind], 1 if kind in held else 0)
        yield safe

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

    def _processes_metrics(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "edgeloop_process_cpu_seconds", "CPU time of each edgeloop process",
            labels=["process"],
        )  # fmt: skip
        rss = GaugeMetricFamily(
            "edgeloop_process_resident_memory_bytes", "Resident memory of each edgeloop process",
            labels=["process"],
        )  # fmt: skip
        for name, process in self._edgeloop_processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                cpu.add_metric([name], times.user + times.system)
                rss.add_metric([name], process.memory_info().rss)
        yield cpu
        yield rss

    def _edgeloop_processes(self) -> list[tuple[str, psutil.Process]]:
        """This io process's parent (the supervisor) and the parent's children, by name
        (``edgeloop-ctl``, ``edgeloop-io``, ``edgeloop-io-1``, ...)."""
        found = []
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process().parent()
            if parent is not None:
                found.append(("supervisor", parent))
                found += [(child.name(), child) for child in parent.children()]
        return found


def _temperatures() -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "edgeloop_board_temperature_celsius", "Thermal zones of the board", labels=["zone"]
    )
    for zone in sorted(THERMAL.glob("thermal_zone*")):
        with contextlib.suppress(OSError, ValueError):
            kind = (zone / "type").read_text().strip()
            family.add_metric([f"{zone.name} {kind}"], int((zone / "temp").read_text()) / 1000)
    yield family


def registry(collector: ApplianceCollector) -> CollectorRegistry:
    made = CollectorRegistry(auto_describe=False)
    made.register(collector)
    return made


def render(made: CollectorRegistry) -> bytes:
    return generate_latest(made)
