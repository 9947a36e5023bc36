"""Field devices on the booted image through the real kernel backends (after
test_appliance.py, same device): a drive on a `vcan` interface read by the CAN driver
through python-can's socketcan backend, and an e-stop button on a gpio-sim chip (the
image's out-of-tree module: Debian's kernel has no gpio-sim) read by the gpiod backend.

The guest is set up as a site would be: the interfaces first, then a conf.d fragment
on /data naming them, then a restart of edgeloop.service. Checked from the host over
the forwarded HTTPS port: the drive's frames in the data log and its device state in
/metrics, the e-stop's press there too, and the safe value on the outputs-enabled line.
The fragment is removed at the end: the next module's power cut boots without it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.image.conftest import Appliance
from tests.image.guest import Guest, GuestError
from tests.image.test_appliance import SERVICE_TIMEOUT_S, https, wait_active

FRAGMENT = "/data/config/conf.d/50-boot-test-devices.yaml"
FIRSTBOOT = "/data/config/conf.d/10-firstboot.yaml"
VIEWER = re.compile(r'token: "([^"]+)", role: viewer')
CONFIGFS_CHIP = "/sys/kernel/config/gpio-sim/boottest"
# The drive simulator's current at standstill (drivers/can/sim.py: IDLE_A).
IDLE_CURRENT_A = 0.5
ESTOP_LINE, ENABLED_LINE = 0, 1

VCAN_UP = "modprobe vcan && ip link add dev vcan0 type vcan && ip link set up vcan0"
# The drive simulator as a transient unit, on the image's own edgeloop.
DRIVE_UP = (
    "systemd-run --unit=boot-test-drive --property=User=edgeloop "
    "/usr/bin/edgeloop sim can --interface socketcan --channel vcan0"
)
# One bank of 4 lines; its chip appears once `live` is 1.
GPIO_SIM_UP = f"""set -e
modprobe gpio-sim
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
mkdir {CONFIGFS_CHIP} {CONFIGFS_CHIP}/bank0
echo 4 > {CONFIGFS_CHIP}/bank0/num_lines
echo 1 > {CONFIGFS_CHIP}/live
udevadm settle
echo $(cat {CONFIGFS_CHIP}/dev_name) $(cat {CONFIGFS_CHIP}/bank0/chip_name)
"""


@dataclass(frozen=True)
class Chip:
    """The gpio-sim chip: its device (gpio-sim.N) and chip (gpiochipN) names."""

    device: str
    name: str

    def line(self, offset: int, attribute: str) -> str:
        return f"/sys/devices/platform/{self.device}/{self.name}/sim_gpio{offset}/{attribute}"


def fragment(chip: Chip) -> str:
    """The site's devices: the drive on vcan0, the e-stop on the gpio-sim chip."""
    # An active-low button, released while pulled up; the outputs-enabled line is driven.
    drive = {
        "bus": {"interface": "socketcan", "channel": "vcan0"},
        "devices": [
            {
                "name": "drive1",
                "dbc": "drive.dbc",
                "watchdog_s": 2.0,
                "points": [
                    {"message": "DriveStatus", "signal": "Current", "entity": "drive1",
                     "component": "Drive", "field": "current", "unit": "A"},
                    {"message": "DriveCommand", "signal": "Enable", "entity": "drive1",
                     "component": "Drive", "field": "enable", "type": "bool",
                     "direction": "output", "safe_value": False},
                ],
                "tx": [{"message": "DriveCommand", "period_ms": 100, "on_change": True}],
            }
        ],
    }  # fmt: skip
    estop = {
        "inputs": [{"chip": chip.name, "offset": ESTOP_LINE, "active_low": True}],
        "outputs_enabled": {"chip": chip.name, "offset": ENABLED_LINE},
    }
    # JSON is YAML: no quoting rules of our own.
    return json.dumps({"can": drive, "estop": estop}, indent=1) + "\n"


def metric(guest: Guest, token: str, name: str) -> float | None:
    """A sample's value from /metrics (``name`` with its labels), None when absent."""
    status, body = https(guest, "/metrics", token)
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def wait_metric(guest: Guest, token: str, name: str, value: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = metric(guest, token, name)
        if seen == value:
            return
        time.sleep(1)
    raise GuestError(f"{name} stayed {seen}, not {value}, for {timeout:.0f} s")


@dataclass(frozen=True)
class Site:
    guest: Guest
    token: str
    chip: Chip


@pytest.fixture(scope="module")
def site(appliance: Appliance) -> Iterator[Site]:
    guest = appliance.guest
    before = wait_active(guest)
    # The console of this boot may not be the first boot's: the token from its file.
    token = VIEWER.search(guest.check(f"cat {FIRSTBOOT}"))
    assert token, f"a viewer token in {FIRSTBOOT}"
    guest.check(VCAN_UP)
    guest.check(DRIVE_UP)
    device, name = guest.check(GPIO_SIM_UP).split()
    chip = Chip(device, name)
    guest.check(f"echo pull-up > {chip.line(ESTOP_LINE, 'pull')}")
    guest.check(f"cat > {FRAGMENT} <<'EOF'\n{fragment(chip)}EOF\nsync {FRAGMENT}")
    guest.check("systemctl restart edgeloop.service", timeout=SERVICE_TIMEOUT_S)
    after = wait_active(guest)
    assert after["MainPID"] != before["MainPID"]
    try:
        yield Site(guest, token.group(1), chip)
    finally:
        guest.run(f"rm -f {FRAGMENT}; sync /data/config/conf.d; systemctl stop boot-test-drive")


def test_can_frames_from_a_drive_on_vcan_reach_the_world(site: Site) -> None:
    wait_metric(
        site.guest, site.token, 'edgeloop_device_state{device="drive1",state="online"}', 1.0, 120
    )
    # The drive's current, as the data log has it (written within a second or so).
    since = time.time() - 600
    query = urllib.parse.urlencode({"field": "drive1.Drive.current", "since": since})
    deadline = time.monotonic() + 60
    while True:
        status, body = https(site.guest, f"/api/trend?{query}", site.token)
        trend = json.loads(body)
        if status == 200 and trend["max"]:
            break
        assert time.monotonic() < deadline, f"no drive1.Drive.current logged: {status} {body!r}"
        time.sleep(1)
    assert max(trend["max"]) == pytest.approx(IDLE_CURRENT_A, abs=0.05)


def test_a_gpio_sim_line_trips_the_estop_and_outputs_go_safe(site: Site) -> None:
    guest, chip = site.guest, site.chip
    assert metric(guest, site.token, "edgeloop_estop_pressed") == 0
    # The chip is a real kernel GPIO chip that edgeloop holds through the gpiod backend.
    assert re.fullmatch(r"gpiochip\d+", chip.name)
    assert guest.check(f"cat {chip.line(ENABLED_LINE, 'value')}").strip() == "1"

    guest.check(f"echo pull-down > {chip.line(ESTOP_LINE, 'pull')}")
    wait_metric(guest, site.token, "edgeloop_estop_pressed", 1.0, 60)
    wait_metric(guest, site.token, 'edgeloop_safe_state{kind="estop"}', 1.0, 30)
    # The safe value on the real line: outputs no longer enabled.
    guest.wait_for(f"grep -qx 0 {chip.line(ENABLED_LINE, 'value')}", 30)
    journal = guest.check("journalctl -b -u edgeloop.service --no-pager -o cat")
    assert "outputs to their safe values" in journal
