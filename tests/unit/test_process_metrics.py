"""The edgeloop processes' families of /metrics: the supervisor and the children the
kernel lists for it, each with CPU, memory and bytes written; a child that is gone is
gone from the next scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from edgeloop.web.processes import SUPERVISOR, EdgeloopProcesses


def _samples(processes: EdgeloopProcesses) -> dict[str, dict[str, float]]:
    return {f.name: {s.labels["process"]: s.value for s in f.samples} for f in processes.families()}


def test_the_supervisor_and_its_children_each_have_their_figures() -> None:
    processes = EdgeloopProcesses(supervisor=os.getpid())  # this test as the supervisor
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in (pids := {p.pid: n for n, p in processes.processes()}):
            assert time.monotonic() < deadline, "the kernel never listed the child"
            time.sleep(0.01)
        assert pids[os.getpid()] == SUPERVISOR
        child_name = pids[child.pid]
        samples = _samples(processes)
        for family in ("edgeloop_process_cpu_seconds", "edgeloop_process_written_bytes"):
            assert {SUPERVISOR, child_name} <= set(samples[family]), family
        assert samples["edgeloop_process_resident_memory_bytes"][SUPERVISOR] > 0
    finally:
        child.kill()
        child.wait()
    assert child.pid not in {p.pid for _, p in processes.processes()}
