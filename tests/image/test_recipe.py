"""The image recipe's files, checked without building: these run in every `make test`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

IMAGE = REPO / "image"
ROOTFS = IMAGE / "rootfs"
ARCH = IMAGE / "arch"
# What RAUC's uboot backend writes to uboot.env: U-Boot's environment size on the Pi.
UBOOT_ENV_SIZE = "0x4000"


def the_default_config(tmp_path: Path, cpu: int = 1) -> Path:
    """/etc/edgeloop/config.yaml as image/customize writes it."""
    text = (ROOTFS / "etc/edgeloop/config.yaml").read_text().replace("@RT_CPU@", str(cpu))
    config = tmp_path / "config.yaml"
    config.write_text(text)
    (tmp_path / "conf.d").mkdir()
    return config


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "check-config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_default_config_is_valid_and_has_no_token(tmp_path: Path) -> None:
    config = the_default_config(tmp_path)
    result = check_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = yaml.safe_load(config.read_text())
    assert "tokens" not in loaded["network"], "tokens are made on the device (firstboot)"
    assert "demo-" not in config.read_text()
    assert loaded["runtime"]["cpu"] == 1


def test_the_first_boot_fragment_merges_into_the_default_config(tmp_path: Path) -> None:
    config = the_default_config(tmp_path)
    # The fragment firstboot writes, with its shell variables filled in.
    script = (ROOTFS / "usr/libexec/edgeloop-image/firstboot").read_text()
    fragment = script.split("<<YAML\n", 1)[1].split("\nYAML\n", 1)[0]
    fragment = fragment.replace("$conf", str(tmp_path / "data"))
    for name in ("viewer", "operator", "admin"):
        fragment = fragment.replace(f"${name}", f"{name}-{'x' * 26}")
    tls = tmp_path / "data" / "tls"
    tls.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=edgeloop", "-keyout", str(tls / "key.pem"),
         "-out", str(tls / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "conf.d" / "10-firstboot.yaml").write_text(fragment)
    result = check_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr, result.stderr


def test_the_kernel_isolates_the_core_the_config_names() -> None:
    build = (IMAGE / "build").read_text()
    for flag in (
        "isolcpus=nohz,domain,managed_irq,$rt_cpu",
        "nohz_full=$rt_cpu",
        "rcu_nocbs=$rt_cpu",
        "threadirqs",
        "cpufreq.default_governor=performance",
    ):
        assert flag in build  # fmt: skip
    customize = (IMAGE / "customize").read_text()
    assert "s/@RT_CPU@/$rt_cpu/" in customize
    assert "cpu: @RT_CPU@" in (ROOTFS / "etc/edgeloop/config.yaml").read_text()


def test_the_rt_kernel_is_a_build_flag() -> None:
    assert (
        'if [ "$rt_kernel" = 1 ]; then kernel=linux-image-rt-amd64; '
        "headers=linux-headers-rt-amd64; fi" in (ARCH / "amd64.sh").read_text()
    ), "the RT kernel, and its headers for gpio-sim"
    assert (
        'if [ "$rt_kernel" = 1 ]; then kernel=linux-image-rt-arm64; fi'
        in (ARCH / "arm64.sh").read_text()
    )
    assert "rt_kernel=${IMAGE_RT_KERNEL:-0}" in (IMAGE / "build").read_text()


@pytest.mark.parametrize(
    "script",
    sorted(p.name for p in (ROOTFS / "usr/libexec/edgeloop-image").iterdir()),
)
def test_the_image_scripts_parse(script: str) -> None:
    path = ROOTFS / "usr/libexec/edgeloop-image" / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["sh", "-n", str(path)], check=True)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_arch_has_its_slot_helper_and_rauc_config(arch: str) -> None:
    helper = ARCH / arch / "rootfs/usr/libexec/edgeloop-image/boot-slots"
    subprocess.run(["sh", "-n", str(helper)], check=True)
    conf = (ARCH / arch / "rootfs/etc/rauc/system.conf").read_text()
    assert re.search(r"^compatible=@COMPATIBLE@$", conf, re.MULTILINE)
    assert re.findall(r"bootname=(\w)", conf) == ["A", "B"]
    fstab = (ROOTFS / "etc/fstab").read_text()
    assert "LABEL=@BOOT_LABEL@ @BOOT_MOUNT@" in fstab, "customize fills in the arch's"


@pytest.mark.parametrize(
    "script",
    ["build", "customize", "bundle", "build-gpio-sim", "arch/amd64.sh", "arch/arm64.sh"],
)
def test_the_build_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(IMAGE / script)], check=True)


def test_every_slot_in_grub_cfg_is_a_slot_of_rauc() -> None:
    grub = (IMAGE / "grub.cfg").read_text()
    rauc = (ARCH / "amd64/rootfs/etc/rauc/system.conf").read_text()
    assert re.findall(r"bootname=(\w)", rauc) == ["A", "B"]
    for slot, partition in (("A", 2), ("B", 3)):
        assert f"rauc.slot={slot}" in grub
        assert f"($disk,gpt{partition})/vmlinuz" in grub
    assert "grubenv=/boot/efi/EFI/BOOT/grubenv" in rauc


def test_every_slot_in_the_pi_boot_script_is_a_slot_of_rauc() -> None:
    boot = (ARCH / "arm64/boot.cmd").read_text()
    rauc = (ARCH / "arm64/rootfs/etc/rauc/system.conf").read_text()
    assert "bootloader=uboot" in rauc
    disk_id = re.search(r"^disk_id=0x([0-9a-f]{8})$", (ARCH / "arm64.sh").read_text(), re.M)
    assert disk_id, "image/arch/arm64.sh: disk_id=0x<8 hex digits>"
    # RAUC's device for each bootname is the partition boot.cmd boots for it.
    for slot, partition in (("A", 2), ("B", 3)):
        assert f"device=/dev/disk/by-partuuid/{disk_id.group(1)}-0{partition}" in rauc
        assert re.search(rf"setenv slot {slot}\n\s+setenv part {partition}\n", boot), (
            f"boot.cmd: slot {slot} on partition {partition}"
        )
    assert "root=PARTUUID=@DISK_ID@-0${part} rauc.slot=${slot}" in boot
    env = (ARCH / "arm64/rootfs/etc/fw_env.config").read_text()
    assert f"/boot/firmware/uboot.env 0x0000 {UBOOT_ENV_SIZE}" in env


class Backend:
    """One bootloader's slot state as the device keeps it, in tmp_path, read by that
    arch's boot-slots helper with the real tool (grub-editenv, fw_printenv)."""

    def __init__(self, arch: str, where: Path) -> None:
        self.arch = arch
        self.where = where
        self.helper = where / "boot-slots"
        text = (ARCH / arch / "rootfs/usr/libexec/edgeloop-image/boot-slots").read_text()
        if arch == "amd64":
            self.env = where / "grubenv"
            text = text.replace("/boot/efi/EFI/BOOT/grubenv", str(self.env))
        else:
            self.env = where / "uboot.env"
            config = where / "fw_env.config"
            config.write_text(f"{self.env} 0x0000 {UBOOT_ENV_SIZE}\n")
            assert "fw_printenv -n" in text
            assert "fw_setenv " in text
            text = text.replace("fw_printenv -n", f"fw_printenv -c {config} -n")
            text = text.replace("fw_setenv ", f"fw_setenv -c {config} ")
            text = text.replace("/boot/firmware/uboot.env", str(self.env))
        self.helper.write_text(text)

    def get(self, name: str) -> str:
        """``name``'s value as the bootloader reads it (the helper's own ``value``)."""
        result = subprocess.run(
            ["sh", "-c", f'. "$0"; value {name}', str(self.helper)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip()

    def set(self, values: dict[str, str]) -> None:
        if self.arch == "amd64":
            self.env.unlink(missing_ok=True)
            subprocess.run(["grub-editenv", str(self.env), "create"], check=True)
            pairs = [f"{key}={value}" for key, value in values.items()]
            subprocess.run(["grub-editenv", str(self.env), "set", *pairs], check=True)
        else:
            text = self.where / "uboot.env.txt"
            text.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
            subprocess.run(
                ["mkenvimage", "-s", UBOOT_ENV_SIZE, "-o", str(self.env), str(text)], check=True
            )


def stub_commands(where: Path, names: tuple[str, ...]) -> Path:
    """Commands in ``where/bin`` that only log how they were called (to the file
    returned): rauc and systemctl must not run for real on the test's host."""
    stubs = where / "bin"
    stubs.mkdir(exist_ok=True)
    log = where / "calls"
    log.write_text("")
    for name in names:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stub.chmod(0o755)
    return log


def run_stubbed(script: Path, where: Path) -> subprocess.CompletedProcess[str]:
    """``sh script`` with the stubs of ``stub_commands(where, ...)`` first on PATH."""
    return subprocess.run(
        ["sh", str(script)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": f"{where / 'bin'}:{os.environ['PATH']}"},
        timeout=60,
    )


def run_fallback(backend: Backend, booted: str) -> tuple[str, str]:
    """The image's fallback script with this backend, on a boot of slot ``booted``:
    its output and what it asked of rauc and systemctl (stubs that log their args)."""
    where = backend.where
    cmdline = where / "cmdline"
    cmdline.write_text(f"root=PARTUUID=x rauc.slot={booted} ro quiet\n")
    script = (ROOTFS / "usr/libexec/edgeloop-image/fallback").read_text()
    assert ". /usr/libexec/edgeloop-image/boot-slots" in script
    script = script.replace("/usr/libexec/edgeloop-image/boot-slots", str(backend.helper))
    script = script.replace("/proc/cmdline", str(cmdline))
    (where / "fallback").write_text(script)
    log = stub_commands(where, ("rauc", "systemctl"))
    result = run_stubbed(where / "fallback", where)
    assert result.returncode == 0, result.stderr
    return result.stdout, log.read_text()


# Per backend: B booted on trial with A good; B committed; B on trial with A not good.
STATES = {
    "amd64": (
        {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "1"},
        {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "0"},
        {"ORDER": "B A", "A_OK": "1", "A_TRY": "1", "B_OK": "1", "B_TRY": "1"},
    ),
    "arm64": (
        {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"},
        {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"},
        {"BOOT_ORDER": "B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "2"},
    ),
}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_fallback_leaves_only_a_trial_boot_and_only_for_a_good_slot(
    arch: str, tmp_path: Path
) -> None:
    backend = Backend(arch, tmp_path)
    trial, committed, other_bad = STATES[arch]

    backend.set(trial)
    out, calls = run_fallback(backend, "B")
    assert "rebooting into slot A" in out
    assert calls == "rauc status mark-bad booted\nsystemctl reboot\n"

    backend.set(committed)
    out, calls = run_fallback(backend, "B")
    assert "slot B is committed: no fallback" in out
    assert calls == ""

    backend.set(other_bad)
    out, calls = run_fallback(backend, "B")
    assert "slot A is not good: no fallback" in out
    assert calls == ""


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_health_commit_marks_the_slot_good_and_flushes_the_boot_state(
    arch: str, tmp_path: Path
) -> None:
    backend = Backend(arch, tmp_path)
    backend.set(STATES[arch][0])
    committed = tmp_path / "committed"
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=PARTUUID=x rauc.slot=B ro\n")
    script = (ROOTFS / "usr/libexec/edgeloop-image/health-commit").read_text()
    script = script.replace("/usr/libexec/edgeloop-image/boot-slots", str(backend.helper))
    script = script.replace("/proc/cmdline", str(cmdline))
    script = script.replace("/run/edgeloop-committed", str(committed))
    (tmp_path / "health-commit").write_text(script)
    log = stub_commands(tmp_path, ("rauc",))
    result = run_stubbed(tmp_path / "health-commit", tmp_path)
    # sync -f fails on a missing file: the helper names the backend's real one.
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "rauc status mark-good booted\n"
    assert committed.read_text() == "B\n"


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_machine_id_goes_into_the_bootloaders_environment(arch: str, tmp_path: Path) -> None:
    backend = Backend(arch, tmp_path)
    backend.set(STATES[arch][1])
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    script = (ROOTFS / "usr/libexec/edgeloop-image/keep-machine-id").read_text()
    script = script.replace("/usr/libexec/edgeloop-image/boot-slots", str(backend.helper))
    script = script.replace("/etc/machine-id", str(machine_id))
    (tmp_path / "keep-machine-id").write_text(script)
    subprocess.run(["sh", str(tmp_path / "keep-machine-id")], check=True, timeout=60)
    assert backend.get("MACHINE_ID") == "0123456789abcdef0123456789abcdef"
    # The slots' state is untouched.
    for name, value in STATES[arch][1].items():
        assert backend.get(name) == value


def test_both_bootloaders_pass_the_machine_id_on() -> None:
    grub = (IMAGE / "grub.cfg").read_text()
    assert 'set CMDLINE="$CMDLINE systemd.machine_id=$MACHINE_ID"' in grub
    boot = (ARCH / "arm64/boot.cmd").read_text()
    assert 'setenv bootargs "${bootargs} systemd.machine_id=${MACHINE_ID}"' in boot
