"""The board's families of ``/metrics``: its thermal zones and a Raspberry Pi
firmware's under-voltage and throttling flags, each left out (not an error) where the
platform has none.

The flags come from the firmware's sysfs file, not ``vcgencmd get_throttled``: a
subprocess per scrape would stall the io process's event loop, and the file says the
same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

THERMAL = Path("/sys/class/thermal")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
# The firmware's get_throttled bits: what holds now (0..3) and since boot (16..19)
THROTTLE_BITS = {
    "under_voltage": 0,
    "frequency_capped": 1,
    "throttled": 2,
    "soft_temperature_limit": 3,
}
SINCE_BOOT_SHIFT = 16


def temperatures(thermal: Path = THERMAL) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "edgeloop_board_temperature_celsius", "Thermal zones of the board", labels=["zone"]
    )
    for zone in sorted(thermal.glob("thermal_zone*")):
        with contextlib.suppress(OSError, ValueError):
            kind = (zone / "type").read_text().strip()
            family.add_metric([f"{zone.name} {kind}"], int((zone / "temp").read_text()) / 1000)
    if family.samples:
        yield family


def throttling(source: Path = THROTTLED) -> Iterator[Metric]:
    """The firmware's flags, from its hex word."""
    try:
        word = int(source.read_text().strip(), 16)
    except (OSError, ValueError):
        return  # not a Raspberry Pi, or a kernel without the firmware's file
    family = GaugeMetricFamily(
        "edgeloop_board_throttled",
        "1 while (now) or if ever since boot (since_boot) the firmware saw the condition",
        labels=["condition", "when"],
    )
    for condition, bit in THROTTLE_BITS.items():
        family.add_metric([condition, "now"], (word >> bit) & 1)
        family.add_metric([condition, "since_boot"], (word >> (bit + SINCE_BOOT_SHIFT)) & 1)
    yield family
