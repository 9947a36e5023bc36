"""What this machine gives a real-time thread, to set a latency figure beside: cyclictest
(rt-tests) on a running appliance's control core, one SCHED_FIFO step above its control
process (so the control loop's own ticks do not delay it: what is left is the kernel's
and, on a VM, the hypervisor's), at 1 kHz, while the benchmark's own load runs. Its p99
is the wake-up latency no code of ours can beat on that core in those minutes; a bench
reports its own p99 next to it and the ratio. Its wake-ups take ~1 % of the core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from typing import Any

import psutil
from control_loop import parse_cyclictest

CONTROL_PROCESS = "edgeloop-ctl"
INTERVAL_US = 1000
HISTOGRAM_US = 50_000  # wake-ups later than this count as overflows (the max is kept)


@dataclass
class Baseline:
    """cyclictest running beside the appliance until ``stop``."""

    proc: asyncio.subprocess.Process
    cpu: int
    priority: int

    async def stop(self) -> dict[str, Any]:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)  # it prints its histogram and exits
        out, err = await self.proc.communicate()
        if not out:  # no privilege for SCHED_FIFO, say: the bench's own figures stand
            return {"platform_error": f"cyclictest: {err.decode().strip()[-200:]}"}
        hist = parse_cyclictest(out.decode())
        return {
            "platform_cpu": self.cpu,
            "platform_priority": self.priority,
            "platform_wakeups": hist.total,
            "platform_p50_ms": hist.percentile(0.5) / 1000,
            "platform_p99_ms": hist.percentile(0.99) / 1000,
            "platform_max_ms": hist.max_us / 1000,
        }


async def start(supervisor: int) -> Baseline | None:
    """cyclictest on the control process's core, or None (no cyclictest, no process)."""
    exe = shutil.which("cyclictest")
    control = next(
        (p for p in psutil.Process(supervisor).children() if p.name() == CONTROL_PROCESS), None
    )
    if exe is None or control is None:
        return None
    cpu = min(control.cpu_affinity())
    priority = min(99, os.sched_getparam(control.pid).sched_priority + 1)
    command = [
        exe,
        "--mlockall",
        f"--priority={priority}",
        f"--interval={INTERVAL_US}",
        "--threads=1",
        f"--affinity={cpu}",
        f"--histogram={HISTOGRAM_US}",
        "--quiet",
        "--default-system",  # leave the C-states alone, as the appliance does
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    return Baseline(proc, cpu, priority)
