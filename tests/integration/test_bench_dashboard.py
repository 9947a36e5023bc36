"""The dashboard benchmark runs end to end in real Chromium, stops by itself and reports
sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_dashboard_bench_small_run(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "dashboard.py"), "--duration", "6",
         "--robots", "20", "--dashboards", "4", "--trend-fields", "2", "--json", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    result = json.loads(out.read_text())
    page, server = result["page"], result["server"]
    assert page["trend_fields"] == 2, "the page opened the trends it was given"
    assert 0 < page["updates_per_s"] <= 31, "at most the subscribed 30 Hz"
    assert page["page_bytes_per_s"] >= page["ws_bytes_per_s"] > 0
    assert 0 < page["renderer_cpu_pct"] <= page["chromium_cpu_pct"]
    assert server["dashboards"] == 4
    assert server["ws_served"] == server["page_served"] == 4, "every dashboard got updates"
