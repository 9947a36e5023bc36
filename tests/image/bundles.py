"""The update bundles the A/B test installs, on a disk image that plays a USB stick.

Made from the built root, signed by the build's key: a good one (only its version file
differs) and a bad one, whose edgeloop.service exits before READY. The stick is on the
device from its first boot (one boot fewer than plugging it in later).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO

BUNDLE_TIMEOUT_S = 900
GOOD, BAD = "good.raucb", "bad.raucb"
GOOD_VERSION, BAD_VERSION = "second", "broken"
BROKEN_DROP_IN = "[Service]\nExecStart=\nExecStart=/bin/false\n"


def variant(rootfs: Path, where: Path, files: dict[str, str]) -> Path:
    """A copy of ``rootfs`` with ``files`` written into it (debugfs: no mount, no loop
    device)."""
    copy = where / "rootfs.ext4"
    subprocess.run(["cp", "--sparse=always", str(rootfs), str(copy)], check=True)
    for path, text in files.items():
        local = where / Path(path).name
        local.write_text(text)
        commands = [f"mkdir {Path(path).parent}", f"rm {path}", f"write {local} {path}"]
        subprocess.run(
            ["debugfs", "-w", "-f", "-", str(copy)],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        shown = subprocess.run(
            ["debugfs", "-R", f"cat {path}", str(copy)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout == text
    return copy


def bundle(rootfs: Path, version: str, out: Path) -> Path:
    subprocess.run(
        [str(REPO / "image" / "bundle"), str(rootfs), version, str(out)],
        check=True,
        env=os.environ,
        timeout=BUNDLE_TIMEOUT_S,
    )
    rootfs.unlink()
    return out


def make_stick(rootfs: Path, where: Path) -> Path:
    """An ext4 disk image (label ``stick``) holding GOOD and BAD."""
    content = where / "stick"
    content.mkdir()
    good_dir, bad_dir = where / "good", where / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    version = "/etc/edgeloop-image-version"
    bundle(variant(rootfs, good_dir, {version: f"{GOOD_VERSION}\n"}), GOOD_VERSION, content / GOOD)
    broken = {
        version: f"{BAD_VERSION}\n",
        "/etc/systemd/system/edgeloop.service.d/90-broken.conf": BROKEN_DROP_IN,
    }
    bundle(variant(rootfs, bad_dir, broken), BAD_VERSION, content / BAD)
    size = sum(p.stat().st_size for p in content.iterdir()) + 64 * 1024 * 1024
    image = where / "stick.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "stick", "-d", str(content), str(image),
         f"{size // 1024}K"],
        check=True,
    )  # fmt: skip
    return image
