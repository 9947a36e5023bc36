"""The ingest bench runs the real appliance and the bare server, stops by itself and
reports coherent figures.

No timing thresholds: throughput and latency depend on the machine and its load (the
README shows measured ones); this checks the bench produces them and that they agree.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

KEYS = {
    "robots",
    "rate_hz",
    "offered_msgs_per_s",
    "delivered_msgs_per_s",
    "max_msgs_per_s",
    "baseline_max_msgs_per_s",
    "ratio_to_baseline",
    "lost_high",
    "latency_p50_ms",
    "latency_p99_ms",
    "world_latency_p50_ms",
    "world_latency_p99_ms",
    "rss_per_connection_kb",
    "io_cpu_pct",
    "control_p99_lateness_us",
    "control_overruns",
    "machine",
}


@pytest.mark.parametrize("io_workers", [1, 2])
def test_ingest_bench_reports_our_path_next_to_a_bare_server(
    tmp_path: Path, io_workers: int
) -> None:
    out = tmp_path / "ingest.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "ingest.py"),
            *("--duration", "3", "--robots", "5", "--rate", "20", "--json", str(out)),
            *("--io-workers", str(io_workers)),
        ],
        check=False,
        capture_output=True,
        text=True,
        # 3 phases of 3 s, the appliance's start and stop, a possible 5 s drain.
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "max sustained, ours" in result.stdout and "max sustained, bare" in result.stdout
    figures = json.loads(out.read_text())
    missing = KEYS - set(figures)
    assert not missing, missing
    assert figures["robots"] == 5 and figures["rate_hz"] == 20
    assert figures["io_workers"] == io_workers
    assert figures["offered_msgs_per_s"] == 100
    assert figures["delivered_msgs_per_s"] > 0
    assert figures["max_msgs_per_s"] > 0 and figures["baseline_max_msgs_per_s"] > 0
    assert figures["ratio_to_baseline"] > 0
    assert figures["lost_high"] == 0
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    # Send -> in the World (the scheduled start of the tick that took the message in),
    # over the dashboard's samples: each one reached the dashboard after its tick ran,
    # and a tick never starts before its schedule, so per sample, hence at p99, it is
    # below the dashboard's (the epsilon: the logged tick origin is rounded to 1 µs and
    # the figures to 0.01 ms). A single sample may be consumed by a tick scheduled just
    # before its send (a late read), but not half of them under this light load.
    world_p50, world_p99 = figures["world_latency_p50_ms"], figures["world_latency_p99_ms"]
    assert figures["world_latency_samples"] == figures["latency_samples"]
    assert 0 <= world_p50 <= world_p99 <= figures["latency_p99_ms"] + 0.02
    assert 0 <= figures["io_cpu_pct"] <= 100
    assert figures["control_p99_lateness_us"] >= 0 and figures["control_overruns"] >= 0
    # TCP loses nothing: every message sent was accepted by the appliance before it
    # stopped (summed over the io workers' logs), and no io restart cut the run short.
    assert figures["io_restarts"] == 0
    assert figures["accepted_total"] == figures["sent_total"] > 0
    assert figures["appliance_exit_status"] == 0


def test_ingest_bench_fails_when_ours_is_under_half_the_bare_server(tmp_path: Path) -> None:
    """The README's ratio (ours / bare) is held by the bench itself: a run where our path
    falls under half the bare server exits non-zero, so a regression like the 1 000-robot
    collapse (0.03-0.05) cannot slip by unnoticed.

    Phases of 15 s, so both ramps get past their knee and bisect (at 8 s a ramp could
    stop at half its knee: 0.34 seen). A FAIL is run once more before it counts: on this
    shared VM one run in a few still under-measures one side (0.52 seen for a path at
    0.6-0.9), while a regression fails both."""
    verdicts = []
    for attempt in range(2):
        out = tmp_path / f"ingest{attempt}.json"
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "ingest.py"),
                *("--duration", "15", "--robots", "50", "--rate", "100", "--json", str(out)),
                *("--min-ratio", "0.5"),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
        )
        verdict = json.loads(out.read_text())["ratio_verdict"]
        verdicts.append(verdict)
        if not verdict.startswith("FAIL"):
            break
        assert result.returncode == 3, result.stderr
    if verdicts[-1].startswith("not judged"):
        pytest.skip(f"ingest ratio {verdicts[-1]}")
    assert verdicts[-1].startswith("ok"), verdicts


def _bench_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("ingest_bench", REPO / "bench" / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ratio", "foreign", "reached", "verdict"),
    [
        (0.3, 0.0, True, "FAIL"),
        (None, 0.0, True, "FAIL"),
        (0.62, 0.0, True, "ok"),
        (0.3, 80.0, True, "not judged"),
        (0.3, 0.0, False, "not judged"),
    ],
)
def test_ratio_verdict(
    monkeypatch: pytest.MonkeyPatch,
    ratio: float | None,
    foreign: float,
    reached: bool,
    verdict: str,
) -> None:
    bench = _bench_module(monkeypatch)
    figures = {
        "ratio_to_baseline": ratio,
        "max_foreign_cpu_pct": foreign,
        "ours_reached_limit": reached,
    }
    assert bench.judge(figures, 0.5).startswith(verdict)


def test_ramp_retries_a_miss_and_reopens_a_bound_that_was_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _bench_module(monkeypatch)
    inf = float("inf")
    assert bench.next_rate(0.0, inf, 10_000.0) == 10_000.0 * bench.RAMP_GROWTH
    assert 20_000.0 < bench.next_rate(20_000.0, 40_000.0, 40_000.0) < 40_000.0
    # Closed in on: the bound itself is tried again.
    assert bench.next_rate(39_500.0, 40_000.0, 39_500.0) == 40_000.0
