"""The Raspberry Pi 4 image `IMAGE_ARCH=arm64 make image` built, checked from the host.

Nothing here boots it (no Pi here, and Debian 12's QEMU has no Pi 4 machine): the disk's
partition table, the firmware partition's files, the root slot's arm64 binaries and
edgeloop in them run under qemu-user, RAUC's configuration and the signed bundle. Run by
`make image-arm64-test` (EDGELOOP_IMAGE_ARM64 names the build directory); skipped
elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

ARM64 = REPO / "image" / "arch" / "arm64.sh"
SECTOR = 512
# ELF e_machine of AArch64, and Linux's arm64 Image header magic ("ARM\x64" at 0x38).
EM_AARCH64 = 183
IMAGE_MAGIC = b"ARM\x64"
# What the root must never hold: the boot partition's packages and the build's helpers.
PURGED = ("raspi-firmware", "u-boot-rpi", "gcc", "linux-headers-arm64")


def arm64_setting(name: str) -> str:
    """A plain assignment in image/arch/arm64.sh (the build's own value)."""
    found = re.search(rf"^{name}=(\S+)$", ARM64.read_text(), re.MULTILINE)
    assert found, f"{name}= in {ARM64}"
    return found.group(1)


@dataclass
class Built:
    directory: Path
    disk: Path
    rootfs: Path
    bundle: Path
    partitions: list[dict[str, object]]
    table: dict[str, object]

    def offset(self, number: int) -> int:
        start = self.partitions[number - 1]["start"]
        assert isinstance(start, int)
        return start * SECTOR

    def fat(self) -> str:
        """mtools' name for the firmware partition inside the disk (no mount)."""
        return f"{self.disk}@@{self.offset(1)}"

    def root_file(self, path: str) -> bytes:
        """A file of root slot A, read from the disk (debugfs at its offset: no mount)."""
        result = subprocess.run(
            ["debugfs", "-R", f"cat {path}", f"{self.disk}?offset={self.offset(2)}"],
            capture_output=True,
            check=True,
            timeout=120,
        )
        assert result.stdout, f"{path}: empty or not in the root ({result.stderr!r})"
        return result.stdout

    def kernel_version(self) -> str:
        """The one kernel in slot A (/usr/lib/modules/<version>)."""
        listing = subprocess.run(
            ["debugfs", "-R", "ls -p /usr/lib/modules", f"{self.disk}?offset={self.offset(2)}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # ls -p: /inode/mode/uid/gid/name/size/ per entry.
        names = [row.split("/")[5] for row in listing.splitlines() if row.count("/") >= 6]
        versions = [name for name in names if name not in {".", ".."}]
        assert len(versions) == 1, versions
        return versions[0]


@pytest.fixture(scope="module")
def built() -> Built:
    where = os.environ.get("EDGELOOP_IMAGE_ARM64")
    if not where:
        pytest.skip("runs under `make image-arm64-test` (EDGELOOP_IMAGE_ARM64 unset)")
    directory = Path(where)
    disk = directory / "disk.img"
    for path in (disk, directory / "rootfs.ext4", directory / "update.raucb"):
        assert path.exists(), f"{path}: run `IMAGE_ARCH=arm64 make image` first"
    out = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True)
    table = json.loads(out.stdout)["partitiontable"]
    return Built(
        directory,
        disk,
        directory / "rootfs.ext4",
        directory / "update.raucb",
        table["partitions"],
        table,
    )


def test_the_disk_is_mbr_with_firmware_two_slots_and_data(built: Built) -> None:
    assert built.table["label"] == "dos", "the Pi 4 boot ROM reads an MBR"
    assert built.table["id"] == arm64_setting("disk_id")
    kinds = [(p["type"], p.get("bootable", False)) for p in built.partitions]
    assert kinds == [("c", True), ("83", False), ("83", False), ("83", False)]
    sizes = [p["size"] for p in built.partitions]
    assert sizes[1] == sizes[2], "both root slots hold the same root"
    assert sizes[1] * SECTOR >= built.rootfs.stat().st_size
    # The root in slot A is the one the bundle carries: the same file system.
    assert (
        built.root_file("/etc/edgeloop-image-version")
        == subprocess.run(
            ["debugfs", "-R", "cat /etc/edgeloop-image-version", str(built.rootfs)],
            capture_output=True,
            check=True,
        ).stdout
    )
    # Slot B stays empty until the first update (U-Boot's first boot: BOOT_ORDER=A).
    blank = subprocess.run(
        ["dd", f"if={built.disk}", "bs=1M", f"skip={built.offset(3)}", "iflag=skip_bytes",
         "count=1", "status=none"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert blank == bytes(len(blank))


def test_the_firmware_partition_starts_u_boot_with_the_boot_script(built: Built) -> None:
    names = set(
        subprocess.run(
            ["mdir", "-b", "-i", built.fat(), "::/"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    names = {name.removeprefix("::/") for name in names}
    for name in ("start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "config.txt",
                 "boot.scr", "u-boot.bin"):  # fmt: skip
        assert name in names, f"{name} not on the firmware partition: {sorted(names)}"
    # uboot.env is U-Boot's to write at the first boot (with its whole default
    # environment); one made here would replace that environment.
    assert "uboot.env" not in names
    label = subprocess.run(
        ["mlabel", "-s", "-i", built.fat(), "::"], capture_output=True, text=True, check=True
    ).stdout
    assert arm64_setting("boot_label") in label

    def read(name: str) -> bytes:
        return subprocess.run(
            ["mtype", "-i", built.fat(), f"::/{name}"], capture_output=True, check=True
        ).stdout

    config = read("config.txt").decode()
    assert re.search(r"^arm_64bit=1$", config, re.MULTILINE)
    assert re.search(r"^kernel=u-boot.bin$", config, re.MULTILINE)
    assert b"U-Boot 20" in read("u-boot.bin"), "Debian's u-boot-rpi build"
    assert read("bcm2711-rpi-4-b.dtb")[:4] == b"\xd0\x0d\xfe\xed", "a flattened device tree"


def test_the_boot_script_is_an_arm64_u_boot_script_for_both_slots(
    built: Built, tmp_path: Path
) -> None:
    script = tmp_path / "boot.scr"
    script.write_bytes(
        subprocess.run(
            ["mtype", "-i", built.fat(), "::/boot.scr"], capture_output=True, check=True
        ).stdout
    )
    header = subprocess.run(
        ["dumpimage", "-l", str(script)], capture_output=True, text=True, check=True
    ).stdout
    assert "AArch64 Linux Script" in header, header
    text = script.read_bytes().decode(errors="replace")
    disk_id = arm64_setting("disk_id").removeprefix("0x")
    assert f"root=PARTUUID={disk_id}-0${{part}} rauc.slot=${{slot}}" in text
    for variable in ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT"):
        assert variable in text
    cmdline = (built.directory / "cmdline").read_text().strip()
    assert cmdline in text, "the kernel command line image/build wrote"
    assert "console=ttyS1,115200" in cmdline
    assert "@" not in re.sub(r"\S+@\S+", "", cmdline)


def test_root_slot_a_holds_an_arm64_system(built: Built) -> None:
    # The venv's compiled wheels too: pip picked them for aarch64 on an amd64 host.
    site = "/opt/edgeloop/lib/python3.11/site-packages"
    for path in ("/usr/bin/python3.11", "/usr/bin/rauc", "/usr/bin/fw_setenv",
                 f"{site}/pydantic_core/_pydantic_core.cpython-311-aarch64-linux-gnu.so",
                 f"{site}/msgspec/_core.cpython-311-aarch64-linux-gnu.so"):  # fmt: skip
        elf = built.root_file(path)
        assert elf[:4] == b"\x7fELF", path
        assert elf[4] == 2, f"{path}: not 64-bit"
        (machine,) = struct.unpack_from("<H", elf, 18)
        assert machine == EM_AARCH64, f"{path}: e_machine {machine}"
    kernel = built.root_file("/boot/Image")
    assert kernel[0x38:0x3C] == IMAGE_MAGIC, "boot.cmd's booti takes an uncompressed arm64 Image"
    assert len(built.root_file("/boot/initrd")) > 1 << 20
    status = built.root_file("/var/lib/dpkg/status").decode()
    installed = set(
        re.findall(r"^Package: (\S+)\nStatus: install ok installed$", status, re.MULTILINE)
    )
    assert {"linux-image-arm64", "rauc", "libubootenv-tool"} <= installed
    assert not installed & set(PURGED), "build-time packages left in the root"


def test_rauc_uses_the_uboot_backend_on_this_disk(built: Built) -> None:
    conf = built.root_file("/etc/rauc/system.conf").decode()
    assert re.search(r"^bootloader=uboot$", conf, re.MULTILINE)
    assert re.search(r"^compatible=edgeloop-arm64$", conf, re.MULTILINE)
    disk_id = arm64_setting("disk_id").removeprefix("0x")
    devices = re.findall(r"^device=(\S+)$", conf, re.MULTILINE)
    assert devices == [f"/dev/disk/by-partuuid/{disk_id}-02", f"/dev/disk/by-partuuid/{disk_id}-03"]
    mount = arm64_setting("boot_mount")
    env = built.root_file("/etc/fw_env.config").decode()
    assert re.search(rf"^{mount}/uboot\.env 0x0000 0x4000$", env, re.MULTILINE)
    fstab = built.root_file("/etc/fstab").decode()
    assert re.search(rf"^LABEL={arm64_setting('boot_label')}\s+{mount}\s+vfat", fstab, re.MULTILINE)
    assert "@" not in fstab
    helper = built.root_file("/usr/libexec/edgeloop-image/boot-slots").decode()
    assert "fw_printenv" in helper and "grub" not in helper


def test_the_bundle_is_for_arm64_and_verifies_with_the_image_keyring(
    built: Built, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.pem"
    keyring.write_bytes(built.root_file("/etc/rauc/keyring.pem"))
    result = subprocess.run(
        ["rauc", "info", f"--keyring={keyring}", "--output-format=json", str(built.bundle)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["compatible"] == "edgeloop-arm64"
    version = built.root_file("/etc/edgeloop-image-version").decode().strip()
    assert info["version"] == version
    # A keyring without the signer's certificate: the bundle does not verify.
    other = tmp_path / "other"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=other", "-keyout", str(other.with_suffix(".key")),
         "-out", str(other.with_suffix(".pem"))],
        check=True, capture_output=True,
    )  # fmt: skip
    refused = subprocess.run(
        ["rauc", "info", f"--keyring={other.with_suffix('.pem')}", str(built.bundle)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert refused.returncode != 0


@pytest.fixture(scope="module")
def root_tree(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Slot A's file system copied out (debugfs rdump: no mount), for chroot."""
    if os.geteuid() != 0:
        pytest.skip("chroot into the arm64 root needs root")
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("no qemu-user binfmt_misc entry for arm64 (make deps)")
    tree = tmp_path_factory.mktemp("arm64-root")
    subprocess.run(
        ["debugfs", "-R", f"rdump / {tree}", str(built.rootfs)],
        capture_output=True,
        check=True,
        timeout=600,
    )
    # As image/arch/arm64.sh does: binfmt_misc without the F flag looks its
    # interpreter up inside the chroot.
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text()
    if not re.search(r"^flags:.*F", entry, re.MULTILINE):
        found = re.search(r"^interpreter (\S+)$", entry, re.MULTILINE)
        assert found
        inside = tree / found.group(1).lstrip("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(found.group(1)).resolve(), inside)
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


def in_root(tree: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(tree), *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={"PATH": "/usr/sbin:/usr/bin", "LANG": "C.UTF-8"},
    )


def test_the_venv_runs_edgeloop_under_qemu_user(root_tree: Path) -> None:
    # The compiled wheels too: pip chose them by platform tag, for aarch64.
    probe = in_root(
        root_tree,
        "/opt/edgeloop/bin/python",
        "-c",
        "import platform, edgeloop, edgeloop.cli, pydantic_core, msgspec, gpiod, psycopg;"
        "print(platform.machine(), psycopg.pq.__impl__)",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["aarch64", "binary"], "psycopg's C build from its wheel"
    (root_tree / "tmp" / "check" / "conf.d").mkdir(parents=True)
    shutil.copy(root_tree / "etc/edgeloop/config.yaml", root_tree / "tmp/check/config.yaml")
    checked = in_root(root_tree, "/usr/bin/edgeloop", "check-config", "/tmp/check/config.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


# The image's U-Boot is Debian's rpi_arm64 build, for the Pi 3 and the Pi 4. Debian 12's
# QEMU (7.2) has a Pi 3 machine (raspi3b) but no Pi 4: there U-Boot runs the image's
# boot.scr from the card, picks slot A, writes uboot.env and starts slot A's kernel,
# which mounts slot A and starts the system (the Pi 3's device tree: the same kernel).
QEMU = shutil.which("qemu-system-aarch64")
# U-Boot, ~70 MiB read from the emulated card at ~1.5 MiB/s, the kernel and systemd up
# to the login prompt (~90 s of guest time): under TCG on a loaded 2-core machine.
KERNEL_START_TIMEOUT_S = 600
# QEMU's SD card must be a power of two in size.
CARD_BYTES = 4 << 30


def wait_for_console(console: Path, qemu: subprocess.Popen[bytes], text: str) -> str:
    deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        shown = console.read_text(errors="replace") if console.exists() else ""
        if text in shown:
            return shown
        assert qemu.poll() is None, f"QEMU exited ({qemu.returncode}):\n{shown[-3000:]}"
        time.sleep(1)  # polling a file another process writes, with a deadline
    pytest.fail(f"no {text!r} on the console in {KERNEL_START_TIMEOUT_S} s:\n{shown[-3000:]}")


def test_u_boot_boots_slot_a_on_qemus_pi_3_and_keeps_its_environment(
    built: Built, tmp_path: Path
) -> None:
    if QEMU is None:
        pytest.skip("qemu-system-aarch64 not installed (qemu-system-arm, make deps)")
    card = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.disk), str(card)], check=True)
    os.truncate(card, CARD_BYTES)
    # QEMU's Pi 3 models only the reboot path of the SoC's watchdog: the board resets
    # the moment systemd arms it (RuntimeWatchdogSec). This boot runs without it.
    override = tmp_path / "90-qemu-raspi3b.conf"
    override.write_text("[Manager]\nRuntimeWatchdogSec=off\n")
    subprocess.run(
        ["debugfs", "-w", "-R", f"write {override} /etc/systemd/system.conf.d/{override.name}",
         f"{card}?offset={built.offset(2)}"],
        check=True, capture_output=True,
    )  # fmt: skip
    fat = f"{card}@@{built.offset(1)}"
    u_boot = tmp_path / "u-boot.bin"
    subprocess.run(["mcopy", "-n", "-i", fat, "::/u-boot.bin", str(u_boot)], check=True)
    kernel = built.kernel_version()
    dtb = tmp_path / "bcm2837-rpi-3-b.dtb"
    dtb.write_bytes(built.root_file(f"/usr/lib/linux-image-{kernel}/broadcom/{dtb.name}"))
    console = tmp_path / "console.log"
    qemu = subprocess.Popen(
        [QEMU, "-M", "raspi3b", "-m", "1G", "-kernel", str(u_boot), "-dtb", str(dtb),
         "-drive", f"file={card},if=sd,format=raw", "-serial", "null",
         "-serial", f"file:{console}", "-display", "none", "-monitor", "none", "-no-reboot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # The console's login prompt: the kernel found slot A's root by its PARTUUID.
        shown = wait_for_console(console, qemu, "edgeloop login:")
    finally:
        qemu.kill()
        qemu.wait(timeout=60)
    assert "edgeloop: booting slot A" in shown
    assert "Debian GNU/Linux 12 edgeloop ttyS1" in shown, "the console boot.cmd names"
    # The environment U-Boot saved, read the way the device reads it: fw_printenv with
    # the geometry of the image's /etc/fw_env.config (16 KiB, CRC-checked).
    env = tmp_path / "uboot.env"
    subprocess.run(["mcopy", "-n", "-i", fat, "::/uboot.env", str(env)], check=True)
    geometry = built.root_file("/etc/fw_env.config").decode().split("\n")
    line = next(row for row in geometry if row.startswith("/"))
    config = tmp_path / "fw_env.config"
    config.write_text(f"{env} {' '.join(line.split()[1:])}\n")

    def value(name: str) -> str:
        return subprocess.run(
            ["fw_printenv", "-c", str(config), "-n", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert value("BOOT_ORDER") == "A"
    assert value("BOOT_A_LEFT") == "2", "the boot took one of A's three"
    assert value("BOOT_B_LEFT") == "0"
    assert value("bootcmd"), "U-Boot's own default environment is kept"
