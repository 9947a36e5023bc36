"""Data-log benchmark: sustained logged samples/s beside the control loop's lateness,
bytes written per hour at the demo's rate, and the loss on a SIGKILL.

Every phase runs the real ``edgeloop run`` (supervisor, control and io processes) in a
fresh state directory under ``--dir`` (its filesystem decides the fsync cost):

1. ``idle``: a plant of ``--tanks`` simulated tanks (each tick changes ~7 numbers of
   each: its level, pump and PID), no data log: the control loop's p99 lateness.
2. ``load``: the same plant with ``data_log: {}`` (every change logged): samples/s
   handed to the io process, samples written, dropped, and p99 lateness again. At the
   default 150 tanks that is ~100 000 samples/s.
3. ``demo rate``: the demo's own two tanks with ``synchronous`` full and then normal:
   bytes the io process wrote (``/proc/PID/io`` ``write_bytes``: what reaches the
   block device, the SD card's wear), per hour.
4. ``kill``: the load plant again, its io process SIGKILLed mid-interval: the seconds
   of samples lost (the kill's time minus the newest sample committed).

Phases 1 and 2 run back to back with the same plant, so their ratio is what logging
costs the loop on this machine now. The lateness comes from the control process's own
histogram (the line it logs when it stops).

    python bench/logger.py [--duration 10] [--tanks 150] [--json OUT] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import emit, machine_description

from edgeloop.data import store

RESULTS = Path(__file__).resolve().parent / "results"
DEMO_TANKS = 2
STATE = "STATE_DIR"  # in a phase's config text, for its own state directory
KILL_AFTER_S = 3.3  # a third of a flush interval past a commit, more or less
_STOPPED = re.compile(r"control loop stopped after (\d+) ticks: lateness p99 (\d+) µs, (\d+) over")
_SENT = re.compile(r"data log: (\d+) samples in \d+ batches handed")
_WRITTEN = re.compile(r"data log: (\d+) samples written in \d+ commits, (\d+) dropped")


@dataclass
class Run:
    ticks: int = 0
    p99_us: int = 0
    overruns: int = 0
    sent: int = 0
    written: int = 0
    dropped: int = 0
    io_write_bytes: int = 0
    seconds: float = 0.0


def _config(tanks: int, data_log: str | None) -> str:
    """The phase's config; ``_start`` puts its own state directory for ``STATE``."""
    rows = "\n".join(f"    - {{name: tank{i}}}" for i in range(tanks))
    section = "" if data_log is None else f"data_log: {data_log}\n"
    return f"runtime: {{name: bench, state_dir: {STATE}}}\ntank_plant:\n  tanks:\n{rows}\n{section}"


def _child(parent: int, comm: str, deadline_s: float = 30.0) -> int:
    deadline = time.monotonic() + deadline_s
    while True:
        for task in Path(f"/proc/{parent}/task").iterdir():
            for pid in (task / "children").read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return int(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {comm} under {parent}")
        time.sleep(0.05)


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _start(workdir: Path, name: str, config: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    place = workdir / name
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    path = place / "config.yaml"
    path.write_text(config.replace(STATE, str(place / "state")))
    log = place / "run.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return proc, log, place / "state" / "data.sqlite3"


def _wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while "ready:" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edgeloop run did not get ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def run_phase(workdir: Path, name: str, config: str, duration_s: float) -> Run:
    """``edgeloop run`` of ``config`` for ``duration_s`` once ready, stopped by SIGTERM."""
    proc, log, _ = _start(workdir, name, config)
    try:
        _wait_ready(log, proc)
        io = _child(proc.pid, "edgeloop-io")
        before = _write_bytes(io)
        started = time.monotonic()
        time.sleep(duration_s)
        after = _write_bytes(io)
        seconds = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text(errors="replace")
    run = Run(io_write_bytes=after - before, seconds=seconds)
    if stopped := _STOPPED.search(text):
        run.ticks, run.p99_us, run.overruns = (int(g) for g in stopped.groups())
    if sent := _SENT.search(text):
        run.sent = int(sent[1])
    if written := _WRITTEN.search(text):
        run.written, run.dropped = int(written[1]), int(written[2])
    return run


def _newest_committed_us(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT max(t1_us) FROM raw").fetchone()[0] or 0)
    finally:
        db.close()


def kill_loss(workdir: Path, config: str) -> float:
    """Seconds of samples a SIGKILL of the io process loses, mid flush interval."""
    proc, log, path = _start(workdir, "kill", config)
    try:
        _wait_ready(log, proc)
        io = _child(proc.pid, "edgeloop-io")
        time.sleep(KILL_AFTER_S)
        os.kill(io, signal.SIGKILL)
        killed_us = time.time_ns() // 1000
        with sqlite3.connect(path) as db:  # as the restarted logger opens it
            if db.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise RuntimeError("the database did not open clean after the kill")
        return (killed_us - _newest_committed_us(path)) / 1e6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds a phase")
    parser.add_argument("--tanks", type=int, default=150)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dir", type=Path, help="where the runs' state goes (a real disk)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="logger-", dir=args.dir or RESULTS))
    try:
        result = _measure(workdir, args.duration, args.tanks)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    emit(_table(result), result, args.json)
    return 0


def _measure(workdir: Path, duration_s: float, tanks: int) -> dict[str, Any]:
    idle = run_phase(workdir, "idle", _config(tanks, None), duration_s)
    load = run_phase(workdir, "load", _config(tanks, "{}"), duration_s)
    demo: dict[str, Run] = {}
    for sync in ("full", "normal"):
        section = f"{{synchronous: {sync}}}"
        demo[sync] = run_phase(workdir, f"demo-{sync}", _config(DEMO_TANKS, section), duration_s)
    lost_s = kill_loss(workdir, _config(tanks, "{}"))
    events_per_s = load.sent / (load.ticks / 100.0) if load.ticks else 0.0
    per_hour = {sync: run.io_write_bytes * 3600 / run.seconds for sync, run in demo.items()}
    demo_rate = demo["full"].sent / (demo["full"].ticks / 100.0) if demo["full"].ticks else 0.0
    return {
        "machine": machine_description(),
        "tanks": tanks,
        "duration_s": duration_s,
        "events_per_s": round(events_per_s),
        "written": load.written,
        "lost": load.sent - load.written + load.dropped,
        "loop_p99_us": load.p99_us,
        "idle_p99_us": idle.p99_us,
        "p99_ratio_to_idle": round(load.p99_us / idle.p99_us, 2) if idle.p99_us else None,
        "overruns": load.overruns,
        "idle_overruns": idle.overruns,
        "demo_events_per_s": round(demo_rate),
        "bytes_per_hour": round(per_hour["full"]),
        "bytes_per_hour_normal": round(per_hour["normal"]),
        "kill_loss_s": round(lost_s, 3),
        "schema_version": store.SCHEMA_VERSION,
    }


def _table(r: dict[str, Any]) -> str:
    mb = 1 << 20
    return "\n".join(
        [
            f"data log, {r['tanks']} tanks, {r['duration_s']:g} s a phase — {r['machine']}",
            f"  logged            {r['events_per_s']:>10,} samples/s  (lost {r['lost']})",
            f"  loop p99          {r['loop_p99_us']:>10} µs  (idle {r['idle_p99_us']} µs, "
            f"ratio {r['p99_ratio_to_idle']}; overruns {r['overruns']} vs {r['idle_overruns']})",
            f"  demo rate         {r['demo_events_per_s']:>10,} samples/s",
            f"  written, full     {r['bytes_per_hour'] / mb:>10.1f} MiB/hour",
            f"  written, normal   {r['bytes_per_hour_normal'] / mb:>10.1f} MiB/hour",
            f"  SIGKILL loss      {r['kill_loss_s']:>10.3f} s  (flush interval 1 s)",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
