"""The fan-out benchmark runs end to end, stops by itself and reports sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_fanout_bench_small_run(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "fanout.py"),
            "--duration",
            "4",
            "--clients",
            "5",
            "--robots",
            "20",
            "--robot-rate",
            "5",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["clients"] == 5
    assert row["clients_served"] == 5, "every dashboard got updates"
    assert 0 < row["updates_per_client_per_s"] <= 31, "at most the subscribed 30 Hz"
    assert row["staleness_p50_ms"] is not None and row["staleness_p50_ms"] >= 0
