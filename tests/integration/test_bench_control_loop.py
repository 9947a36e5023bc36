"""The control-loop latency bench runs, stops by itself and reports both sides.

No timing thresholds: the figures depend on the machine and its load (the README shows
measured ones); this checks the bench produces them and that they are coherent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

KEYS = {
    "rate_hz",
    "ticks",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "overruns",
    "cyclictest_p50_us",
    "cyclictest_p99_us",
    "cyclictest_max_us",
    "cyclictest_over_period",
    "ratio_p99",
    "load",
    "spin_us",
    "cpu_pct",
    "machine",
}


def test_control_loop_bench_reports_ours_next_to_cyclictest(tmp_path: Path) -> None:
    # Not skipped when missing: make test installs rt-tests, and a skip would hide that.
    assert shutil.which("cyclictest"), "cyclictest missing: make deps installs rt-tests"
    out = tmp_path / "control_loop.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "control_loop.py"),
            "--duration",
            "2",
            "--load",
            "idle",
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "edgeloop" in result.stdout and "cyclictest" in result.stdout
    figures = json.loads(out.read_text())
    missing = KEYS - set(figures)
    assert not missing, missing
    assert figures["load"] == "idle" and figures["rate_hz"] == 100
    assert figures["ticks"] > 100
    for prefix in ("", "cyclictest_"):
        p50, p99, top = (figures[f"{prefix}{k}"] for k in ("p50_us", "p99_us", "max_us"))
        assert 0 <= p50 <= p99 <= top, (prefix, p50, p99, top)
    assert figures["p99_us"] <= figures["p999_us"] <= figures["max_us"]
    assert figures["overruns"] >= 0 and figures["cyclictest_over_period"] >= 0
    assert 0 < figures["cpu_pct"] <= 100
    assert figures["ratio_p99"] is None or figures["ratio_p99"] >= 0


def test_control_loop_bench_explains_a_missing_cyclictest(tmp_path: Path) -> None:
    # Only the interpreter's directory on PATH: no cyclictest there.
    env = {"PATH": str(Path(sys.executable).parent)}
    if shutil.which("cyclictest", path=env["PATH"]) is not None:
        pytest.skip("cyclictest sits next to the interpreter")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "control_loop.py"), "--duration", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0
    assert "apt-get install rt-tests" in result.stderr
