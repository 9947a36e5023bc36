"""The ``edgeloop`` command, run as a user runs it: a subprocess with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeloop import __version__
from tests.conftest import REPO
from tests.demo_place import demo_place

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
CONFIG_FILES = sorted((REPO / "config").rglob("*.yaml"))


def edgeloop(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version() -> None:
    result = edgeloop("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edgeloop {__version__}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_config_is_valid(path: Path) -> None:
    result = edgeloop("check-config", str(path))
    assert result.returncode == 0, result.stderr


def test_example_configs_exist() -> None:
    assert REPO / "config" / "demo.yaml" in CONFIG_FILES


def test_check_config_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "runtime:\n"
        "  rate_hz: 0\n"
        "  on_system_eror: skip\n"
        "tank_plant:\n"
        "  tanks:\n"
        "    - name: t1\n"
        "      pid: {kpp: 1.0}\n"
        "tank_plnt: {}\n"
    )
    result = edgeloop("check-config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:2:12: runtime.rate_hz: 0 must be greater than 0",
        f"{config}:3:3: runtime.on_system_eror: unknown key 'on_system_eror' "
        "(did you mean 'on_system_error'?)",
        f"{config}:7:13: tank_plant.tanks[0].pid.kpp: unknown key 'kpp' (did you mean 'kp'?)",
        f"{config}:8:1: tank_plnt: unknown section 'tank_plnt' (did you mean 'tank_plant'?)",
    ]


def test_run_with_a_bad_config_exits_2_naming_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  rate_hz: -5\n")
    result = edgeloop("run", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:2:12: runtime.rate_hz" in result.stderr


def _wait_for_line(proc: subprocess.Popen[str], needle: str, deadline_s: float) -> list[str]:
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    lines: list[str] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line:
            lines.append(line)
            if needle in line:
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.01)  # polling a pipe; the deadline, not this, bounds the wait
    pytest.fail(f"{needle!r} not seen within {deadline_s}s; got: {''.join(lines)}")


def test_run_stopped_while_it_starts_exits_cleanly(tmp_path: Path) -> None:
    # Its children are just started: still importing (no handler for SIGTERM yet) or
    # starting up.
    proc = subprocess.Popen(
        [*EDGELOOP, "run", "-c", str(demo_place(tmp_path).config())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(proc, "supervisor process real-time settings", 30)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "while stopping" not in rest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_signal_and_runs_shutdown(signum: int, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*EDGELOOP, "run", "-c", str(demo_place(tmp_path).config())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(proc, "ready", 30)
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    # SafeState's trip, what applies it (plant, field bridge, robots), the e-stop's lines
    # and the gpio section's closed, the data log's last samples handed on
    assert "shutdown schedule ran: 7 system(s), 0 failed" in rest
    assert "stopped after" in rest


def test_demo_runs_supervised_reports_the_plant_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # Until its robots are in, not for a fixed time: start-up is slow on a loaded machine.
    # The duration only bounds a run whose test died.
    options = demo_place(tmp_path).options
    proc = subprocess.Popen(
        [*EDGELOOP, "demo", "--duration", "300", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = "".join(_wait_for_line(proc, "robot-1 as device", 90))  # the sim robots
        if "tank1: level" not in seen:
            _wait_for_line(proc, "tank1: level", 30)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "control loop stopped after" in rest
    assert "io process stopped" in rest


def test_single_process_demo_runs_exactly_its_duration_in_ticks(tmp_path: Path) -> None:
    options = demo_place(tmp_path).options
    result = edgeloop("demo", "--single-process", "--duration", "1.2", *options, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tank1: level" in result.stderr
    assert "stopped after 120 ticks" in result.stderr


def test_demo_runs_the_config_it_placed_in_its_run_dir(tmp_path: Path) -> None:
    place = demo_place(tmp_path)
    result = edgeloop("demo", "--single-process", "--duration", "0.1", *place.options)
    assert result.returncode == 0, result.stderr
    assert f"running {tmp_path / 'config.yaml'}" in result.stderr
    assert f"port: {place.port_base}" in (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize("base", ["80", "65534", "many"])
def test_demo_refuses_a_port_base_without_room_for_its_ports(base: str) -> None:
    result = edgeloop("demo", "--port-base", base, "--duration", "0")
    assert result.returncode == 2
    assert "--port-base" in result.stderr


def test_demo_help_says_which_port_is_which() -> None:
    said = " ".join(edgeloop("demo", "--help").stdout.split())
    assert "N+1 (dashboard, HTTP and WebSocket)" in said
    assert "instead of 7700, 8080, 5020, 5502, 47111" in said
    assert "--run-dir DIR" in said


def test_check_config_warns_about_weak_and_demo_tokens_with_their_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "network:\n"
        "  tokens:\n"
        "    - {token: secret, role: operator}\n"
        "    - {token: demo-robot, role: device}\n"
        "    - {token: 4f9c2e7a1b8d3f6e0a5c9b2d, role: device}\n"
    )
    result = edgeloop("check-config", str(config))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"{config}:3:15: warning: network.tokens[0].token: weak token: "
        "use at least 16 random characters",
        f"{config}:4:15: warning: network.tokens[1].token: a published demo token: "
        "anyone can use it; set a random one",
    ]
