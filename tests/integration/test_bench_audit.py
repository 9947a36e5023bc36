"""The audit bench runs both phases, stops by itself and reports coherent figures.

No timing thresholds: an fsync's cost depends on the disk and its load (docs/safety.md
shows measured ones); this checks the bench produces them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

KEYS = {
    "appends_per_s",
    "append_us_p50",
    "append_us_p99",
    "durable_ms_p50",
    "durable_ms_p99",
    "fsync_ms_p50",
    "fsync_ms_p99",
    "machine",
    "filesystem",
}


def test_audit_bench_reports_append_cost_durable_latency_and_rate(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "audit.py"),
            *("--duration", "1", "--dir", str(tmp_path), "--json", str(out)),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "append -> durable (ms)" in result.stdout
    figures = json.loads(out.read_text())
    missing = KEYS - set(figures)
    assert not missing, missing
    assert figures["paced_entries"] > 0 and figures["appends_per_s"] > 0
    assert 0 < figures["append_us_p50"] <= figures["append_us_p99"]
    assert 0 < figures["fsync_ms_p50"] <= figures["fsync_ms_p99"]
    assert 0 < figures["durable_ms_p50"] <= figures["durable_ms_p99"]
    assert list(tmp_path.iterdir()) == [out], "the bench removes its log"
