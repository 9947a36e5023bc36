"""``edgeloop audit verify|tail``, run as an operator runs them: a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeloop.safety.audit import FILE_NAME, AuditLog

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
FLUSH_S = 10.0


def edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=60, check=False
    )


def audit_log(state_dir: Path, count: int) -> Path:
    with AuditLog.open(state_dir) as audit:
        for index in range(count):
            audit.append("command", client="robot-1", role="operator", what=f"move {index}")
        audit.append("estop.reset_refused", reason="input still pressed", tick=1234)
        assert audit.flush(FLUSH_S)
    return state_dir / FILE_NAME


def config_with_state_dir(tmp_path: Path, state_dir: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"runtime:\n  state_dir: {state_dir}\n")
    return config


def test_verify_of_a_whole_chain_exits_0_with_its_head(tmp_path: Path) -> None:
    path = audit_log(tmp_path / "state", 3)
    result = edgeloop("audit", "verify", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: ok, 4 entries, head seq 3 ")


def test_verify_finds_the_log_through_the_config(tmp_path: Path) -> None:
    path = audit_log(tmp_path / "state", 2)
    config = config_with_state_dir(tmp_path, tmp_path / "state")
    result = edgeloop("audit", "verify", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: ok, 3 entries")


def test_verify_names_the_first_bad_entry_and_exits_1(tmp_path: Path) -> None:
    path = audit_log(tmp_path / "state", 4)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], *lines[3:]]))
    result = edgeloop("audit", "verify", "--file", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{path}:3 (seq 3): seq gap: expected 2, found 3; the 2 entries before it verify"
    )


def test_verify_of_a_missing_log_exits_1(tmp_path: Path) -> None:
    result = edgeloop("audit", "verify", "--file", str(tmp_path / FILE_NAME))
    assert result.returncode == 1 and "no audit log here" in result.stderr


def test_verify_with_a_bad_config_exits_2_naming_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  state_dri: /x\n")
    result = edgeloop("audit", "verify", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:2:3:" in result.stderr


def test_tail_prints_the_last_entries_one_a_line(tmp_path: Path) -> None:
    path = audit_log(tmp_path / "state", 5)
    result = edgeloop("audit", "tail", "--file", str(path), "-n", "2")
    assert result.returncode == 0, result.stderr
    move, refused = result.stdout.splitlines()
    first = json.loads(path.read_bytes().splitlines()[4])
    assert move == (f'{first["time"]} #4 command client=robot-1 role=operator what="move 4"')
    assert refused.endswith(' #5 estop.reset_refused reason="input still pressed" tick=1234')


def test_tail_through_the_config_defaults_to_the_last_20(tmp_path: Path) -> None:
    audit_log(tmp_path / "state", 30)
    config = config_with_state_dir(tmp_path, tmp_path / "state")
    result = edgeloop("audit", "tail", "-c", str(config))
    assert result.returncode == 0, result.stderr
    shown = result.stdout.splitlines()
    assert len(shown) == 20 and " #11 command " in shown[0] and " #30 " in shown[-1]
