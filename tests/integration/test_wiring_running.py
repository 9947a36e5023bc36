"""`edgeloop wiring --running` asks a real `edgeloop run` of the demo config for the
wiring it was started with: the same table `edgeloop wiring -c` prints from the file."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.demo_place import demo_place

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
START_S = 45.0


def _edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_running_appliance_shows_the_wiring_of_its_config(tmp_path: Path) -> None:
    place = demo_place(tmp_path)
    config = str(place.config())
    from_file = _edgeloop("wiring", "-c", config)
    assert from_file.returncode == 0, from_file.stderr
    run = subprocess.Popen(
        [*EDGELOOP, "run", "-c", config, "--duration", "90"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until = time.monotonic() + START_S
        while (
            asked := _edgeloop("wiring", "--running", "-c", config, "--token", "demo-viewer")
        ).returncode:
            assert time.monotonic() < until, asked.stderr
            assert run.poll() is None, "edgeloop run stopped"
            time.sleep(0.2)  # polling a starting appliance, not synchronising
        header, *rows = asked.stdout.splitlines()
        assert header.startswith(f"# running {config} (127.0.0.1:")
        assert rows == from_file.stdout.splitlines()
        assert any(row.startswith("tank1.Pid.setpoint ") for row in rows)
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            err = run.communicate(timeout=30)[1]
        finally:
            run.kill()
    assert run.returncode == 0, err[-3000:]


def test_run_refuses_to_start_on_a_double_writer_naming_both_lines(tmp_path: Path) -> None:
    place = demo_place(tmp_path)
    path = place.config()
    text = path.read_text().replace("field: pressure, table: input", "field: cycles, table: input")
    path.write_text(text)
    refused = _edgeloop("run", "-c", str(path), "--duration", "5")
    assert refused.returncode == 2, refused.stderr
    found = re.search(
        rf"{re.escape(str(path))}:(\d+):\d+: modbus\.lines\[0\]\.devices\[0\]\.points\[1\]: "
        r"press1\.Press\.cycles is written by modbus plc1 points\[1\] \(driver input\) and "
        rf"by modbus plc1 points\[0\] \(driver input, {re.escape(str(path))}:(\d+):\d+\)",
        refused.stderr,
    )
    assert found is not None, refused.stderr
    lines = text.splitlines()
    second, first = (lines[int(n) - 1] for n in found.groups())
    assert "field: cycles, table: input" in second and "field: cycles, table: holding" in first
