"""What the benchmarks that run the whole appliance share: `edgeloop run` started and
stopped, its io process found, its CPU read, and a fleet of simulated robots (the
robots of bench/fanout.py, which stamp their send time into their telemetry)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
STARTUP_S = 60.0


@contextlib.contextmanager
def running(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``edgeloop run -c config`` (warnings and worse logged) until the block ends."""
    argv = [sys.executable, "-m", "edgeloop.cli", "--log-level", "WARNING", "run"]
    appliance = subprocess.Popen([*argv, "-c", str(config)])
    try:
        yield appliance
    finally:
        appliance.send_signal(signal.SIGTERM)
        try:
            appliance.wait(30)
        except subprocess.TimeoutExpired:
            appliance.kill()


def wait_for_port(port: int, deadline_s: float = STARTUP_S) -> None:
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)  # polling a port that is not open yet, bounded by the deadline
    raise TimeoutError(f"the appliance did not open port {port}")


def io_process(supervisor: int) -> psutil.Process:
    for child in psutil.Process(supervisor).children(recursive=True):
        if child.name() == "edgeloop-io":
            return child
    raise LookupError("no io process")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU of ``processes`` so far (one that ended counts nothing)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


@contextlib.contextmanager
def robots(
    tcp_port: int, count: int, *, procs: int, rate_hz: float, seconds: float
) -> Iterator[None]:
    """``count`` robots streaming telemetry at ``rate_hz`` for at most ``seconds``, in
    ``procs`` processes (one Python process does not keep 1 000 robots up)."""
    share = count // procs
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "fanout.py"),
                "--child",
                "robots",
                "--port",
                str(tcp_port),
                "--first",
                str(i * share),
                "--count",
                str(share + (count % procs if i == procs - 1 else 0)),
                "--rate",
                str(rate_hz),
                "--seconds",
                str(seconds),
            ]
        )
        for i in range(procs)
    ]
    try:
        yield
    finally:
        for child in children:
            child.kill()


@contextlib.contextmanager
def client_processes(
    argv: Callable[[int, Path], list[str]], count: int, *, procs: int, wait_s: float
) -> Iterator[list[Any]]:
    """``count`` clients in ``procs`` processes (one Python process cannot read what a
    hundred dashboards get), each started as ``argv(its share, its out file)``. Once
    the block ends and they are done (at most ``wait_s``), the list holds what each
    wrote to its out file (JSON)."""
    results: list[Any] = []
    with tempfile.TemporaryDirectory() as folder:
        outs = [Path(folder) / f"{i}.json" for i in range(procs)]
        shares = [count // procs + (i < count % procs) for i in range(procs)]
        children = [subprocess.Popen(argv(n, out)) for n, out in zip(shares, outs, strict=True)]
        try:
            yield results
            for child in children:
                child.wait(wait_s)
        finally:
            for child in children:
                child.kill()
        results += [json.loads(out.read_text()) for out in outs if out.exists()]
