"""The supervisor with its two children, watched through a real NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.process_tree import child_named

WATCHDOG_USEC = 400_000  # pings every 200 ms
PING_S = WATCHDOG_USEC / 2e6
READY_TIMEOUT_S = 30

CONFIG = """
runtime:
  name: supervised
  rate_hz: 100
  control_timeout_s: {control_timeout_s}
  io_timeout_s: 3.0
tank_plant:
  tanks:
    - name: tank1
"""


@dataclass
class Notifications:
    """What the supervisor told "systemd", with arrival times."""

    sock: socket.socket
    log: list[tuple[float, str]] = field(default_factory=list)

    def poll(self, until: float) -> None:
        """Collect messages until the monotonic time ``until``."""
        while (remaining := until - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            for line in data.decode().splitlines():
                self.log.append((time.monotonic(), line))

    def wait_for(self, prefix: str, timeout_s: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout_s
        seen = len(self.log)
        while True:
            for stamp, line in self.log[seen:]:
                if line.startswith(prefix):
                    return stamp, line
            seen = len(self.log)
            if time.monotonic() >= deadline:
                pytest.fail(f"no {prefix!r} within {timeout_s}s; got {self.log[-5:]}")
            self.poll(min(deadline, time.monotonic() + 0.1))

    def pings(self, since: float, until: float) -> list[float]:
        return [t for t, line in self.log if line == "WATCHDOG=1" and since <= t < until]

    def ticks(self) -> list[int]:
        return [int(m.group(1)) for _, line in self.log if (m := re.search(r"tick (\d+)", line))]


@dataclass
class Appliance:
    proc: subprocess.Popen[str]
    notes: Notifications
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        """What the three processes logged so far (read by a thread, so a chatty run
        never blocks on a full pipe)."""
        return "".join(self.stderr_lines)

    def child(self, comm: str) -> int:
        """The pid of the supervisor's child named ``comm`` (as ps shows it)."""
        return child_named(self.proc.pid, comm)

    def wait_for_child(self, comm: str, other_than: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                pid = self.child(comm)
            except (LookupError, FileNotFoundError):
                pid = other_than
            if pid != other_than:
                return pid
            self.notes.poll(time.monotonic() + 0.05)
        pytest.fail(f"no new {comm} within {timeout_s}s")


@pytest.fixture
def appliance(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Appliance]:
    control_timeout_s = getattr(request, "param", 3.0)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(control_timeout_s=control_timeout_s))
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    appliance = Appliance(proc, Notifications(sock))
    assert proc.stderr is not None
    reader = threading.Thread(
        target=lambda: appliance.stderr_lines.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        yield appliance
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        reader.join(15)
        sock.close()


def _eventually(condition: Callable[[], bool], timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling the reader thread's output, bounded by the deadline
    return True


def test_ready_then_watchdog_pings_at_half_the_watchdog_interval(appliance: Appliance) -> None:
    notes = appliance.notes
    ready_at, _ = notes.wait_for("READY=1", READY_TIMEOUT_S)
    notes.poll(ready_at + 2.0)
    pings = notes.pings(ready_at, ready_at + 2.0)
    assert len(pings) >= 7
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    assert gaps[len(gaps) // 2] == pytest.approx(PING_S, abs=0.05)
    assert any(line.startswith("STATUS=") and "Hz" in line for _, line in notes.log)


def test_children_are_named_for_ps(appliance: Appliance) -> None:
    appliance.notes.wait_for("READY=1", READY_TIMEOUT_S)
    assert appliance.child("edgeloop-ctl") != appliance.child("edgeloop-io")


def test_pings_stop_while_the_control_loop_is_stopped_and_resume_after(
    appliance: Appliance,
) -> None:
    notes = appliance.notes
    ready_at, _ = notes.wait_for("READY=1", READY_TIMEOUT_S)
    notes.poll(ready_at + 0.5)
    control = appliance.child("edgeloop-ctl")
    os.kill(control, signal.SIGSTOP)
    stopped_at = time.monotonic()
    notes.poll(stopped_at + 1.5)  # shorter than control_timeout_s (3 s)
    os.kill(control, signal.SIGCONT)
    resumed_at = time.monotonic()
    notes.poll(resumed_at + 1.0)
    assert notes.pings(stopped_at + PING_S, resumed_at) == [], "no ping a full interval on"
    after = notes.pings(resumed_at, resumed_at + 1.0)
    assert len(after) >= 3
    assert after[0] - resumed_at < PING_S, "the first ping comes as soon as ticks resume"
    assert appliance.proc.poll() is None


@pytest.mark.parametrize("appliance", [1.0], indirect=True)
def test_a_control_loop_stalled_past_its_timeout_ends_the_supervisor(
    appliance: Appliance,
) -> None:
    appliance.notes.wait_for("READY=1", READY_TIMEOUT_S)
    os.kill(appliance.child("edgeloop-ctl"), signal.SIGSTOP)
    assert appliance.proc.wait(15) == 1
    assert _eventually(lambda: "control loop stalled for more than 1 s" in appliance.stderr)


def test_a_killed_io_process_is_restarted_while_control_keeps_ticking(
    appliance: Appliance,
) -> None:
    notes = appliance.notes
    notes.wait_for("READY=1", READY_TIMEOUT_S)
    control = appliance.child("edgeloop-ctl")
    io = appliance.child("edgeloop-io")
    notes.wait_for("STATUS=", 5)
    before = notes.ticks()[-1]
    os.kill(io, signal.SIGKILL)
    new_io = appliance.wait_for_child("edgeloop-io", other_than=io, timeout_s=15)
    notes.wait_for("STATUS=", 5)
    _, line = notes.wait_for("STATUS=", 5)
    assert "io up" in line, "the control process has its new channel"
    ticks = notes.ticks()
    assert ticks == sorted(ticks) and ticks[-1] > before
    assert appliance.child("edgeloop-ctl") == control, "the control process was never replaced"
    assert new_io != io
    # The io restart is the supervisor's business: systemd's watchdog stays fed.
    pings = notes.pings(0, time.monotonic())
    assert max(b - a for a, b in itertools.pairwise(pings)) < 2 * PING_S


def test_an_io_process_restarted_after_the_config_was_edited_runs_nothing(
    appliance: Appliance, tmp_path: Path
) -> None:
    notes = appliance.notes
    notes.wait_for("READY=1", READY_TIMEOUT_S)
    config = tmp_path / "config.yaml"
    config.write_text(config.read_text().replace("tank1", "tank9"))  # valid, but not ours
    io = appliance.child("edgeloop-io")
    os.kill(io, signal.SIGKILL)
    appliance.wait_for_child("edgeloop-io", other_than=io, timeout_s=15)
    deadline = time.monotonic() + 15
    while not any("CONFIG CHANGED on disk: io worker 0 idle" in line for _, line in notes.log):
        assert time.monotonic() < deadline, notes.log[-3:]
        notes.poll(time.monotonic() + 0.1)
    assert _eventually(lambda: "was edited since the appliance started" in appliance.stderr)
    assert appliance.proc.poll() is None, "the appliance runs on, control keeps its config"


def test_sigterm_sends_stopping_and_exits_0(appliance: Appliance) -> None:
    appliance.notes.wait_for("READY=1", READY_TIMEOUT_S)
    appliance.proc.send_signal(signal.SIGTERM)
    assert appliance.proc.wait(15) == 0
    appliance.notes.wait_for("STOPPING=1", 1)
    # SafeState's trip, then the plant's pumps to safe speed
    assert _eventually(lambda: "shutdown schedule ran: 2 system(s), 0 failed" in appliance.stderr)


def test_a_child_that_will_not_stop_is_killed_and_reported(appliance: Appliance) -> None:
    appliance.notes.wait_for("READY=1", READY_TIMEOUT_S)
    os.kill(appliance.child("edgeloop-io"), signal.SIGSTOP)
    appliance.proc.send_signal(signal.SIGTERM)
    assert appliance.proc.wait(30) == 1
    assert _eventually(lambda: "io process did not stop within 5 s; killed" in appliance.stderr)
    assert "shutdown schedule ran" in appliance.stderr, "control still stopped cleanly"


def test_a_start_slower_than_startup_timeout_s_ends_the_supervisor(tmp_path: Path) -> None:
    # 1 ms for imports and the first tick, and 20 ms more: no Python process makes it
    # (on a quiet machine one can in 0.5 s), so the supervisor gives up
    # startup_timeout_s + control_timeout_s after the start.
    config = tmp_path / "config.yaml"
    text = CONFIG.format(control_timeout_s=0.02).replace(
        "  io_timeout_s: 3.0\n", "  io_timeout_s: 3.0\n  startup_timeout_s: 0.001\n"
    )
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        # Without the setting the run would go on: the bound only has to end that.
        timeout=4 * READY_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "control loop stalled for more than 0.02 s" in result.stderr
