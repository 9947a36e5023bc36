"""A/B updates with RAUC on the booted image (after test_appliance.py, same device).

Two bundles are made from the built root, signed by the build's key: a good one (only
its version file differs) and a bad one, whose edgeloop.service exits before READY.
They reach the device on a second disk, as on a USB stick. The good one switches the
device to slot B and is committed once edgeloop is READY; the bad one goes into slot
A, fails on its trial boot, and the device falls back to B.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.image.conftest import BOOT_TIMEOUT_S, Appliance, Built
from tests.image.guest import Guest, GuestError

INSTALL_TIMEOUT_S = 900
BROKEN_DROP_IN = "[Service]\nExecStart=\nExecStart=/bin/false\n"


def variant(built: Built, where: Path, files: dict[str, str]) -> Path:
    """A copy of the built root file system with ``files`` written into it (debugfs:
    no mount, no loop device)."""
    rootfs = where / "rootfs.ext4"
    subprocess.run(["cp", "--sparse=always", str(built.rootfs), str(rootfs)], check=True)
    for path, text in files.items():
        local = where / Path(path).name
        local.write_text(text)
        commands = [f"mkdir {Path(path).parent}", f"rm {path}", f"write {local} {path}"]
        subprocess.run(
            ["debugfs", "-w", "-f", "-", str(rootfs)],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        shown = subprocess.run(
            ["debugfs", "-R", f"cat {path}", str(rootfs)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout == text
    return rootfs


def bundle(rootfs: Path, version: str, out: Path) -> Path:
    subprocess.run(
        [str(REPO / "image" / "bundle"), str(rootfs), version, str(out)],
        check=True,
        env=os.environ,
        timeout=INSTALL_TIMEOUT_S,
    )
    rootfs.unlink()
    return out


@pytest.fixture(scope="module")
def stick(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ext4 disk image holding good.raucb and bad.raucb."""
    where = tmp_path_factory.mktemp("bundles")
    content = where / "stick"
    content.mkdir()
    good_dir, bad_dir = where / "good", where / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    bundle(
        variant(built, good_dir, {"/etc/edgeloop-image-version": "second\n"}),
        "second",
        content / "good.raucb",
    )
    bundle(
        variant(
            built,
            bad_dir,
            {
                "/etc/edgeloop-image-version": "broken\n",
                "/etc/systemd/system/edgeloop.service.d/90-broken.conf": BROKEN_DROP_IN,
            },
        ),
        "broken",
        content / "bad.raucb",
    )
    size = sum(p.stat().st_size for p in content.iterdir()) + 64 * 1024 * 1024
    image = where / "stick.img"
    subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "stick",
            "-d",
            str(content),
            str(image),
            str(size // 1024) + "K",
        ],
        check=True,
    )
    return image


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
    guest.check(f"rauc install /mnt/{name}", timeout=INSTALL_TIMEOUT_S)


def committed(guest: Guest) -> None:
    guest.wait_for("test -e /run/edgeloop-committed", BOOT_TIMEOUT_S)


def test_an_update_switches_slots_and_is_committed_once_ready(
    appliance: Appliance, stick: Path
) -> None:
    appliance.power_cut()
    appliance.extra_drives = (stick,)
    guest = appliance.boot()
    committed(guest)
    assert booted_slot(guest) == "A"
    first = boot_id(guest)
    install(guest, "good.raucb")
    env = grubenv(guest)
    assert env["ORDER"].split()[0] == "B"
    assert env["B_OK"] == "1"

    reboot_and_wait(guest, into_a_boot_other_than={first})
    assert booted_slot(guest) == "B"
    assert guest.check("cat /etc/edgeloop-image-version").strip() == "second"
    committed(guest)
    env = grubenv(guest)
    assert (env["B_OK"], env["B_TRY"]) == ("1", "0")
    # The device's own config and data came along: they live on /data.
    assert guest.check("ls /data/config/conf.d").split() == ["10-firstboot.yaml"]


def test_a_bundle_that_never_gets_ready_falls_back(appliance: Appliance) -> None:
    guest = appliance.guest
    seen = {boot_id(guest)}
    assert booted_slot(guest) == "B"
    console_at = len(guest.console_text())
    install(guest, "bad.raucb")
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
    assert guest.check("cat /etc/edgeloop-image-version").strip() == "second"
    committed(guest)
    env = grubenv(guest)
    assert env["A_OK"] == "0"
    assert (env["B_OK"], env["B_TRY"]) == ("1", "0")
