"""The data-log bench runs its phases against real ``edgeloop run``s, stops by itself
and reports coherent figures: every sample handed over written, none lost, the kill's
loss within the flush interval. No timing thresholds on the loop: that depends on the
machine's load (the README shows a run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

KEYS = {"events_per_s", "loop_p99_us", "idle_p99_us", "lost", "bytes_per_hour", "kill_loss_s"}


def test_logger_bench_reports_rate_loss_wear_and_kill_loss(tmp_path: Path) -> None:
    out = tmp_path / "logger.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "logger.py"),
         *("--duration", "2", "--tanks", "20", "--dir", str(tmp_path), "--json", str(out))],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures.keys() >= KEYS
    assert figures["events_per_s"] > 20 * 5 * 100 * 0.5, "20 tanks change ~7 numbers a tick"
    assert figures["written"] > 0 and figures["lost"] == 0
    assert figures["bytes_per_hour"] > 0
    assert 0 <= figures["kill_loss_s"] <= 1.25, "one flush interval, and the ticks in flight"
    assert "samples/s" in result.stdout
