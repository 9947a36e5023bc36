"""systemd/edgeloop.service: systemd accepts it, and it says what the runtime relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "edgeloop.service"
SYSUSERS = REPO / "systemd" / "edgeloop.sysusers.conf"
INSTALLED_EXECUTABLE = "/usr/bin/edgeloop"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the 'systemd' package (make deps installs it)")
    return path


def _settings(text: str) -> dict[tuple[str, str], list[str]]:
    """Every value of every key, by (section, key): unit files repeat keys."""
    settings: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def _verify(unit_text: str, tmp_path: Path) -> list[str]:
    """Run `systemd-analyze verify` on a copy; return its stderr lines about the unit."""
    # The copy runs the venv's console script: verify checks that ExecStart= is executable,
    # and /usr/bin/edgeloop only exists on the image.
    edgeloop = Path(sys.executable).parent / "edgeloop"
    assert edgeloop.is_file(), edgeloop
    assert INSTALLED_EXECUTABLE in unit_text
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text.replace(INSTALLED_EXECUTABLE, str(edgeloop)))
    result = subprocess.run(
        [_tool("systemd-analyze"), "verify", "--man=no", str(copy)],
        check=False,  # the exit code is asserted below, with stderr in the message
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # systemd 252 (Debian 12) prints nothing at all for this unit; in particular it does not
    # check that User=edgeloop exists. Lines about other units (a host's own broken units
    # pulled in as dependencies) are not ours to judge, so only lines naming ours count.
    return [line for line in result.stderr.splitlines() if UNIT.name in line]


def test_systemd_analyze_verify_reports_no_problem(tmp_path: Path) -> None:
    assert _verify(UNIT.read_text(), tmp_path) == []


def test_verify_check_catches_a_mistake(tmp_path: Path) -> None:
    # verify exits 0 even on unknown keys, so the stderr check above is what catches them.
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=mixd")
    (problem,) = _verify(broken, tmp_path)
    assert "mixd" in problem


def test_unit_has_the_settings_the_runtime_relies_on() -> None:
    service = {
        key: values
        for (section, key), values in _settings(UNIT.read_text()).items()
        if section == "Service"
    }
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["5s"]
    assert service["ExecStart"] == [f"{INSTALLED_EXECUTABLE} run -c /etc/edgeloop/config.yaml"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillMode"] == ["mixed"]
    assert service["LimitMEMLOCK"] == ["infinity"]
    assert int(service["LimitRTPRIO"][0]) >= 50  # the control process's SCHED_FIFO priority
    assert {"CAP_SYS_NICE", "CAP_IPC_LOCK"} <= set(" ".join(service["AmbientCapabilities"]).split())
    assert service["ProtectSystem"] == ["strict"]
    assert service["User"] == ["edgeloop"]
    assert "RestrictRealtime" not in service
    assert "PYTHONUNBUFFERED=1" in service["Environment"]


def test_sysusers_snippet_creates_the_service_account(tmp_path: Path) -> None:
    # A dry run against an empty root: it parses the snippet for real and needs no root.
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n")
    result = subprocess.run(
        [_tool("systemd-sysusers"), "--dry-run", f"--root={tmp_path}", str(SYSUSERS)],
        check=False,  # asserted below, with stderr in the message
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert SYSUSERS.name not in result.stderr  # parse problems name the file and line
    assert "Creating user 'edgeloop'" in result.stderr
    (user,) = (line.split() for line in SYSUSERS.read_text().splitlines() if line[:2] == "u ")
    assert user[-1] == "/var/lib/edgeloop"  # home = the unit's StateDirectory
