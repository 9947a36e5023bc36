"""``edgeloop gpio get|set`` and ``edgeloop estop press|release``, run as an operator runs
them, against a simulated chip opened in this test process."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

from edgeloop.drivers.gpio import GpioLine, open_input, open_output

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]


def edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_gpio_set_drives_an_input_of_this_process(tmp_path: Path) -> None:
    button = open_input(GpioLine(chip="sim", offset=3, active_low=True), tmp_path)
    try:
        result = edgeloop("gpio", "set", "--state-dir", str(tmp_path), "3", "1")
        assert result.returncode == 0, result.stderr
        assert not button.active()
        result = edgeloop("gpio", "set", "--state-dir", str(tmp_path), "3", "0")
        assert result.returncode == 0, result.stderr
        assert select.select([button], [], [], 0)[0] == [button]
        assert button.read_edges() == 2
        assert button.active()
    finally:
        button.close()


def test_gpio_get_prints_an_outputs_level(tmp_path: Path) -> None:
    lamp = open_output(GpioLine(chip="sim", offset=5), tmp_path, initial=False)
    try:
        assert edgeloop("gpio", "get", "--state-dir", str(tmp_path), "5").stdout == "0\n"
        lamp.set(True)
        assert edgeloop("gpio", "get", "--state-dir", str(tmp_path), "5").stdout == "1\n"
        refused = edgeloop("gpio", "set", "--state-dir", str(tmp_path), "5", "0")
        assert refused.returncode == 1
        assert "line 5 is an output of this process" in refused.stderr
    finally:
        lamp.close()


def test_gpio_without_a_chip_asks_whether_edgeloop_runs(tmp_path: Path) -> None:
    result = edgeloop("gpio", "get", "--state-dir", str(tmp_path), "0")
    assert result.returncode == 1
    assert "is `edgeloop run` running with chip: sim?" in result.stderr
    assert "Traceback" not in result.stderr


def test_estop_press_without_estop_inputs_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"runtime:\n  state_dir: {tmp_path}\n")
    for action in ("press", "release"):
        result = edgeloop("estop", action, "-c", str(config))
        assert result.returncode == 1
        assert result.stderr == "edgeloop estop: the config has no estop.inputs\n"


def test_estop_press_of_a_bad_config_lists_its_problems(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  rate_hz: 0\n")
    result = edgeloop("estop", "press", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:2:12: runtime.rate_hz" in result.stderr
