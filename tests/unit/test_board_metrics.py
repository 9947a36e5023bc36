"""The board's families of /metrics: thermal zones and the Raspberry Pi firmware's
throttling flags where the platform has them, left out (not an error) where not."""

from __future__ import annotations

from pathlib import Path

from edgeloop.web import board


def test_thermal_zones_in_celsius_and_none_without_a_zone(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48312\n")
    (family,) = board.temperatures(tmp_path)
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"zone": "thermal_zone0 cpu-thermal"}, 48.312)
    ]
    assert list(board.temperatures(tmp_path / "none")) == []


def test_throttling_flags_now_and_since_boot(tmp_path: Path) -> None:
    word = tmp_path / "get_throttled"
    word.write_text("50005\n")  # under-voltage and throttled now; both since boot too
    (family,) = board.throttling(word)
    flags = {(s.labels["condition"], s.labels["when"]): s.value for s in family.samples}
    assert flags[("under_voltage", "now")] == 1
    assert flags[("throttled", "now")] == 1
    assert flags[("frequency_capped", "now")] == 0
    assert flags[("under_voltage", "since_boot")] == 1
    assert flags[("throttled", "since_boot")] == 1
    assert flags[("soft_temperature_limit", "since_boot")] == 0
    assert list(board.throttling(tmp_path / "not-a-pi")) == []
