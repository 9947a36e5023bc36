"""The edgeloop processes' families of ``/metrics``: CPU, resident memory and bytes
written to storage of the supervisor and each of its children (psutil).

The children are read from the kernel's list (``/proc/PID/task/TID/children``), not
found by psutil's scan of every process on the machine (~10 ms on a busy box, in the io
process's event loop); psutil's ``Process`` objects are kept between scrapes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SUPERVISOR = "supervisor"


class EdgeloopProcesses:
    """``supervisor``: its pid (None: this io process's parent)."""

    def __init__(self, supervisor: int | None = None, proc: Path = Path("/proc")) -> None:
        self.supervisor = supervisor
        self.proc = proc
        self._known: dict[int, psutil.Process] = {}

    def families(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "edgeloop_process_cpu_seconds", "CPU time of each edgeloop process",
            labels=["process"],
        )  # fmt: skip
        rss = GaugeMetricFamily(
            "edgeloop_process_resident_memory_bytes",
            "Resident memory of each edgeloop process", labels=["process"],
        )  # fmt: skip
        # What reaches the storage layer (/proc/PID/io write_bytes), as bench/logger.py
        # measures the data log's SD-card wear: its rate is the bytes written per hour.
        written = CounterMetricFamily(
            "edgeloop_process_written_bytes", "Bytes each edgeloop process wrote to storage",
            labels=["process"],
        )  # fmt: skip
        for name, process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                memory = process.memory_info().rss
                cpu.add_metric([name], times.user + times.system)
                rss.add_metric([name], memory)
            # A kernel without task io accounting has no /proc/PID/io.
            with contextlib.suppress(psutil.Error, OSError):
                written.add_metric([name], process.io_counters().write_bytes)
        yield cpu
        yield rss
        yield written

    def processes(self) -> list[tuple[str, psutil.Process]]:
        """This io process's parent (the supervisor), then the parent's children by
        name (``edgeloop-ctl``, ``edgeloop-io``, ``edgeloop-io1``, ...)."""
        supervisor = os.getppid() if self.supervisor is None else self.supervisor
        known = {}
        for pid in (supervisor, *self._children(supervisor)):
            process = self._known.get(pid)
            if process is None:
                try:
                    process = psutil.Process(pid)
                except psutil.Error:
                    continue  # gone since the kernel listed it
            known[pid] = process
        self._known = known
        found = []
        for pid, process in self._known.items():
            with contextlib.suppress(psutil.Error):
                found.append((SUPERVISOR if pid == supervisor else process.name(), process))
        return found

    def _children(self, parent: int) -> list[int]:
        try:
            tasks = list((self.proc / str(parent) / "task").iterdir())
            return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]
        except OSError:  # a kernel without CONFIG_PROC_CHILDREN: psutil's scan
            with contextlib.suppress(psutil.Error):
                return [child.pid for child in psutil.Process(parent).children()]
            return []
