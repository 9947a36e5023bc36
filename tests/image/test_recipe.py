"""The image recipe's files, checked without building: these run in every `make test`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

IMAGE = REPO / "image"
ROOTFS = IMAGE / "rootfs"


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
    build = (IMAGE / "build").read_text()
    assert (
        'if [ "$rt_kernel" = 1 ]; then kernel=linux-image-rt-amd64; '
        "headers=linux-headers-rt-amd64; fi" in build
    ), "the RT kernel, and its headers for gpio-sim"
    assert "rt_kernel=${IMAGE_RT_KERNEL:-0}" in build


@pytest.mark.parametrize(
    "script",
    sorted(p.name for p in (ROOTFS / "usr/libexec/edgeloop-image").iterdir()),
)
def test_the_image_scripts_parse(script: str) -> None:
    path = ROOTFS / "usr/libexec/edgeloop-image" / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["sh", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", ["build", "customize", "bundle", "build-gpio-sim"])
def test_the_build_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(IMAGE / script)], check=True)


def test_every_slot_in_grub_cfg_is_a_slot_of_rauc() -> None:
    grub = (IMAGE / "grub.cfg").read_text()
    rauc = (ROOTFS / "etc/rauc/system.conf").read_text()
    assert re.findall(r"bootname=(\w)", rauc) == ["A", "B"]
    for slot, partition in (("A", 2), ("B", 3)):
        assert f"rauc.slot={slot}" in grub
        assert f"($disk,gpt{partition})/vmlinuz" in grub
    assert "grubenv=/boot/efi/EFI/BOOT/grubenv" in rauc
