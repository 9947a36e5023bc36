"""The CAN receive bench runs both phases, stops by itself and reports coherent figures.

No timing thresholds: throughput depends on the machine and its load (the README shows
measured ones); this checks the bench produces them and that the World got the frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

KEYS = {
    "frames_per_s",
    "signals_per_s",
    "io_cpu_pct",
    "frames_per_cpu_s",
    "baseline_frames_per_s",
    "baseline_cpu_pct",
    "baseline_frames_per_cpu_s",
    "ratio_to_baseline",
    "world_has_last_values",
    "machine",
}


def test_can_rx_bench_reports_ours_next_to_bare_python_can(tmp_path: Path) -> None:
    out = tmp_path / "can_rx.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "can_rx.py"), "--duration", "1", "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ours (into the World)" in result.stdout and "bare python-can" in result.stdout
    figures = json.loads(out.read_text())
    missing = KEYS - set(figures)
    assert not missing, missing
    assert figures["frames_per_s"] > 0 and figures["baseline_frames_per_s"] > 0
    per_frame = figures["signals_per_frame"]
    assert figures["signals_per_s"] == pytest.approx(figures["frames_per_s"] * per_frame)
    assert 0 < figures["io_cpu_pct"] <= 200 and figures["ratio_to_baseline"] > 0
    assert figures["world_has_last_values"] is True
    assert figures["frames_decoded"] == figures["frames_sent"] and figures["garbage"] == 0
