"""A/B updates with RAUC on the booted image (after the other modules, same device).

The bundles (tests/image/bundles.py) are on a second disk, as on a USB stick. The good
one switches the device to slot B and is committed once edgeloop is READY; the bad one
goes into slot A, fails on its trial boot, and the device falls back to B.
"""

from __future__ import annotations

import contextlib
import time

from tests.image.bundles import BAD, BUNDLE_TIMEOUT_S, GOOD, GOOD_VERSION
from tests.image.conftest import BOOT_TIMEOUT_S, Appliance
from tests.image.guest import Guest, GuestError

FIRSTBOOT = "/data/config/conf.d/10-firstboot.yaml"


def boot_id(guest: Guest) -> str:
    return guest.check("cat /proc/sys/kernel/random/boot_id").strip()


def grubenv(guest: Guest) -> dict[str, str]:
    out = guest.check("grub-editenv /boot/efi/EFI/BOOT/grubenv list")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def booted_slot(guest: Guest) -> str:
    cmdline = guest.check("cat /proc/cmdline")
    return next(arg.split("=", 1)[1] for arg in cmdline.split() if arg.startswith("rauc.slot="))


def request_reboot(guest: Guest) -> None:
    """``systemctl reboot`` in the guest; the agent may go down before it answers."""
    with contextlib.suppress(GuestError, OSError):
        guest.run("systemctl reboot", timeout=30)


def reboot_and_wait(guest: Guest, *, into_a_boot_other_than: set[str]) -> str:
    """Reboot from inside; the new boot's id once the agent answers there."""
    request_reboot(guest)
    deadline = time.monotonic() + BOOT_TIMEOUT_S * 2
    while time.monotonic() < deadline:
        try:
            guest.wait_agent(60)
            now = boot_id(guest)
        except (GuestError, OSError):
            continue
        if now not in into_a_boot_other_than:
            return now
        time.sleep(2)
    raise GuestError("the guest did not come back from its reboot")


def install(guest: Guest, name: str) -> None:
    guest.check("mountpoint -q /mnt || mount -o ro LABEL=stick /mnt")
    guest.check(f"rauc install /mnt/{name}", timeout=BUNDLE_TIMEOUT_S)


def committed(guest: Guest) -> None:
    guest.wait_for("test -e /run/edgeloop-committed", BOOT_TIMEOUT_S)


def test_an_update_switches_slots_and_is_committed_once_ready(appliance: Appliance) -> None:
    guest = appliance.guest
    committed(guest)
    assert booted_slot(guest) == "A"
    first = boot_id(guest)
    secrets = guest.check(f"cat {FIRSTBOOT}")
    install(guest, GOOD)
    env = grubenv(guest)
    assert env["ORDER"].split()[0] == "B"
    assert env["B_OK"] == "1"

    console_at = len(guest.console_text())
    reboot_and_wait(guest, into_a_boot_other_than={first})
    assert booted_slot(guest) == "B", guest.console_text()[console_at:][-4000:]
    assert guest.check("cat /etc/edgeloop-image-version").strip() == GOOD_VERSION
    committed(guest)
    env = grubenv(guest)
    assert (env["B_OK"], env["B_TRY"]) == ("1", "0")
    # The device's own config and data came along: they live on /data.
    assert guest.check(f"cat {FIRSTBOOT}") == secrets


def test_a_bundle_that_never_gets_ready_falls_back(appliance: Appliance) -> None:
    guest = appliance.guest
    seen = {boot_id(guest)}
    assert booted_slot(guest) == "B"
    console_at = len(guest.console_text())
    install(guest, BAD)
    assert grubenv(guest)["ORDER"].split()[0] == "A"

    # The trial boot of A fails and reboots by itself; wait for the boot after it.
    deadline = time.monotonic() + BOOT_TIMEOUT_S * 3
    request_reboot(guest)
    while time.monotonic() < deadline:
        try:
            guest.wait_agent(60)
            if boot_id(guest) not in seen and booted_slot(guest) == "B":
                break
        except (GuestError, OSError, StopIteration):
            pass
        time.sleep(2)
    else:
        raise GuestError("no boot back into slot B:\n" + guest.console_text()[console_at:][-4000:])
    console = guest.console_text()[console_at:]
    assert "marking it bad, rebooting into slot B" in console
    assert guest.check("cat /etc/edgeloop-image-version").strip() == GOOD_VERSION
    committed(guest)
    env = grubenv(guest)
    assert env["A_OK"] == "0"
    assert (env["B_OK"], env["B_TRY"]) == ("1", "0")
