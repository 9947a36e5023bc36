"""The Modbus poll bench polls a simulated PLC into the World and reports coherent figures.

No thresholds on speed (the README shows measured figures); this checks the bench runs
against the real simulator, stops by itself, and that its figures agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_modbus_poll_bench_fails_when_ours_costs_twice_the_bare_client(tmp_path: Path) -> None:
    """The README's ratio (ours / bare client, points per CPU-second, same invocation)
    is held by the bench: a run under 0.5 exits 3. 0.66-0.88 is what this path gives on
    the shared 2-core VMs; 5 s phases so the figure is past start-up. A FAIL is run once
    more before it counts (one side under-measured on a busy box), a regression fails
    both."""
    verdicts = []
    for attempt in range(2):
        out = tmp_path / f"modbus{attempt}.json"
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "modbus_poll.py"),
                *("--duration", "5", "--max-outstanding", "4", "--json", str(out)),
                *("--min-ratio", "0.5"),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )
        figures = json.loads(out.read_text())
        verdicts.append(figures["ratio_verdict"])
        assert figures["cpu_ratio_to_baseline"] == pytest.approx(
            figures["points_per_cpu_s"] / figures["baseline_points_per_cpu_s"]
        )
        if not verdicts[-1].startswith("FAIL"):
            assert result.returncode == 0, result.stderr
            break
        assert result.returncode == 3, result.stderr
    assert verdicts[-1].startswith("ok"), verdicts
