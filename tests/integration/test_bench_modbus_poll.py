"""The Modbus poll bench polls a simulated PLC into the World and reports coherent figures.

No thresholds on speed (the README shows measured figures); this checks the bench runs
against the real simulator, stops by itself, and that its figures agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

KEYS = {"points_per_s", "requests_per_cycle", "cpu_pct", "points_per_cpu_s", "rss_mb"}


def test_modbus_poll_bench_reads_every_unit_into_the_world(tmp_path: Path) -> None:
    out = tmp_path / "modbus_poll.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "modbus_poll.py"),
            *("--duration", "1", "--max-outstanding", "4", "--json", str(out)),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS, KEYS - set(figures)
    assert figures["devices_online"] == figures["units"] == 10
    # 1 000 registers in reads of at most 125: 8 requests per unit id.
    assert figures["requests_per_cycle"] == 80
    assert figures["points_per_s"] > 0 and figures["baseline_points_per_s"] > 0
    assert 0 < figures["cpu_pct"] <= 200
    assert figures["points_per_cpu_s"] > 0 and figures["rss_mb"] > 0
    # the pipelined row: the same layout, 4 requests outstanding, every unit online
    assert figures["pipelined_max_outstanding"] == 4
    assert figures["pipelined_devices_online"] == 10
    assert figures["pipelined_requests_per_cycle"] == 80
    assert figures["pipelined_points_per_s"] > 0 and figures["pipelined_points_per_cpu_s"] > 0
    assert 0 < figures["pipelined_cpu_pct"] <= 200
    assert "pipelined (max_outstanding 4)" in result.stdout
