"""The benchmarks run, stop by themselves and print the figures the README table uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_world_bench_writes_its_json_and_a_table(tmp_path: Path) -> None:
    out = tmp_path / "world.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "world_bench.py"),
            "--duration",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "entities" in result.stdout and "µs/tick" in result.stdout
    figures = json.loads(out.read_text())
    rows = {row["entities"]: row for row in figures["rows"]}
    assert set(rows) == {1000, 10000}
    for row in rows.values():
        assert row["us_per_tick"] > 0 and row["full_scan_us"] > 0 and row["changed_query_us"] > 0
    # 1 % changed: reading only the changes must beat visiting everything (same run).
    assert rows[10000]["changed_query_us"] < rows[10000]["full_scan_us"]
