"""The e-stop bench presses the real appliance's simulated button and times the safe
write at its own Modbus peer: every press is counted and none misses its 1 s deadline.

No latency thresholds (docs/safety.md and the lead's report show measured figures;
a shared 2-core VM moves them): this checks the bench runs the whole cycle, stops by
itself and reports coherent figures. A miss is a safe value not on the wire within a
second, which no load of this box has come near (max 61 ms with 100 robots at 100 Hz).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

KEYS = {"presses", "p50_ms", "p99_ms", "max_ms", "missed", "load", "machine"}
PRESSES = 20


def test_estop_bench_times_every_press_to_the_safe_write(tmp_path: Path) -> None:
    out = tmp_path / "estop.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "estop.py"),
            *("--duration", "60", "--presses", str(PRESSES), "--load", "idle"),
            *("--json", str(out)),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "E-stop edge -> safe value on the wire" in result.stdout
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS, KEYS - set(figures)
    assert figures["load"] == "idle"
    assert figures["presses"] == PRESSES
    assert figures["missed"] == 0
    assert 0 < figures["min_ms"] <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["max_ms"] < 1000  # within the press deadline, or it was a miss
