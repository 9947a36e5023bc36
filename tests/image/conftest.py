"""The boot test's fixtures: the image `make image` built, booted once per session.

The boot tests run under `make image-test` (EDGELOOP_IMAGE names the build directory);
elsewhere they are skipped, since they need the built image, QEMU and several minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image.bundles import make_stick
from tests.image.guest import Guest

# Under TCG on a loaded 2-core machine: firmware, GRUB, kernel and systemd.
BOOT_TIMEOUT_S = 420
# What the test adds to the disk image, as a larger card would: the first boot grows
# the data partition into it.
GROW_MIB = 256
# Put on the data partition before the first boot, as a site's fragment would be: QEMU
# without KVM on a busy 2-core host runs the guest tens of times slower than hardware,
# and the children's start-up takes longer than the default 15 s. control_timeout_s
# stays at its default, below the unit's WatchdogSec with room to spare, so that a
# stalled loop is the supervisor's to find first (test_appliance.py).
EMULATION_FRAGMENT = "runtime:\n  io_timeout_s: 4.5\n  startup_timeout_s: 180\n"


@dataclass
class Built:
    directory: Path
    disk: Path
    rootfs: Path
    bundle: Path


@pytest.fixture(scope="session")
def built() -> Built:
    where = os.environ.get("EDGELOOP_IMAGE")
    if not where:
        pytest.skip("the boot test runs under `make image-test` (EDGELOOP_IMAGE unset)")
    directory = Path(where)
    found = Built(
        directory,
        directory / "disk.img",
        directory / "rootfs.ext4",
        directory / "update.raucb",
    )
    for path in (found.disk, found.rootfs, found.bundle):
        assert path.exists(), f"{path}: run `make image` first"
    return found


def add_to_data_partition(disk: Path, workdir: Path, path: str, text: str) -> None:
    """Write ``path`` into the disk's data partition (debugfs at its offset: no mount)."""
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout
    )
    data = next(p for p in table["partitiontable"]["partitions"] if p.get("name") == "data")
    local = workdir / Path(path).name
    local.write_text(text)
    parent, commands = Path(), []
    for part in Path(path).parent.parts:
        parent /= part
        commands.append(f"mkdir {parent}")
    commands.append(f"write {local} {path}")
    subprocess.run(
        ["debugfs", "-w", "-f", "-", f"{disk}?offset={data['start'] * 512}"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    shown = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{disk}?offset={data['start'] * 512}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == text, shown.stderr


class Appliance:
    """The session's device: one disk, booted by one QEMU process at a time."""

    def __init__(self, disk: Path, workdir: Path, *, stick: Path) -> None:
        self.disk = disk
        self.workdir = workdir
        # The update bundles' stick (test_update.py), plugged in from the start.
        self.extra_drives = (stick,)
        self.guest = Guest(disk, workdir)

    def boot(self) -> Guest:
        """Start QEMU (a new process: a power-on) and wait for the guest agent."""
        self.guest = Guest(self.disk, self.workdir, extra_drives=self.extra_drives)
        self.guest.start()
        self.guest.wait_agent(BOOT_TIMEOUT_S)
        return self.guest

    def power_cut(self) -> None:
        self.guest.kill()


@pytest.fixture(scope="session")
def appliance(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    workdir = tmp_path_factory.mktemp("appliance")
    disk = workdir / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(built.disk), str(disk)], check=True)
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + GROW_MIB * 1024 * 1024)
    add_to_data_partition(disk, workdir, "config/conf.d/90-emulation.yaml", EMULATION_FRAGMENT)
    stick = make_stick(built.rootfs, tmp_path_factory.mktemp("bundles"))
    device = Appliance(disk, workdir, stick=stick)
    device.boot()
    try:
        yield device
    finally:
        device.power_cut()
