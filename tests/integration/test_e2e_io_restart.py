"""End to end against a running `edgeloop run` of the demo config: the io process
killed while the e-stop holds (the safe values reach the devices again once the
supervisor has it back), and the audit log of that run, which verifies and shows an
edited or a removed line.

One appliance serves the module; the audit test reads what the first one left.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.running_appliance import Appliance, edgeloop, running_appliance

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN_COIL = 0  # press1.Press.run on the PLC (config/demo.yaml), safe_value false
BACK_S = 30.0  # a new io process up and its drivers connected, on a loaded 2-core box


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def appliance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Appliance]:
    async with running_appliance(tmp_path_factory.mktemp("io-restart")) as running:
        yield running


def _new_io_pid(appliance: Appliance, old: int) -> int | None:
    try:
        pid = appliance.io_pid()
    except (LookupError, FileNotFoundError):  # between the old one and the new one
        return None
    return None if pid == old else pid


def _causes(appliance: Appliance, event: str) -> list[str]:
    return [e["cause"] for e in appliance.audit_entries() if e["event"] == event]


async def test_a_killed_io_process_gets_the_safe_values_out_again_once_it_is_back(
    appliance: Appliance,
) -> None:
    plc, can = appliance.plc, appliance.can
    pressed = await appliance.press()
    await appliance.until(lambda: False in plc.coil_writes(RUN_COIL, pressed), 10, "run off")

    old = appliance.io_pid()
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    # Meanwhile the PLC lost what it was told (a power cycle: its run coil on again).
    plc.write(1, "coil", RUN_COIL, [True])
    await appliance.until(lambda: _new_io_pid(appliance, old) is not None, BACK_S, "new io")
    await appliance.until(
        lambda: False in plc.coil_writes(RUN_COIL, killed), BACK_S, "run off, sent again"
    )
    assert plc.read(1, "coil", RUN_COIL, 1) == [False]
    await appliance.until(lambda: len(can.commands(killed)) >= 3, BACK_S, "CAN frames again")
    assert {(c["SpeedSetpoint"], c["Enable"]) for c in can.commands(killed)} == {(0, 0)}
    await appliance.until(lambda: "io_lost" in _causes(appliance, "safety.trip"), 10, "io_lost")

    refused = await appliance.reset()
    assert not refused.accepted and "estop" in refused.reason
    await appliance.press(False)
    accepted = await appliance.reset()
    assert accepted.accepted, accepted.reason
    await appliance.until(
        lambda: {"estop", "io_lost"} <= set(_causes(appliance, "safety.end")), 10, "both ended"
    )
    assert "restarted (1 restarts so far)" in appliance.log()


def _complete_lines(appliance: Appliance) -> list[str]:
    text = appliance.audit_path.read_text()
    return text[: text.rfind("\n") + 1].splitlines(keepends=True)


def _verify(path: Path) -> tuple[int, str]:
    result = edgeloop("audit", "verify", "--file", str(path))
    return result.returncode, result.stdout + result.stderr


async def test_the_audit_log_of_the_run_verifies_and_shows_an_edited_or_removed_line(
    appliance: Appliance, tmp_path: Path
) -> None:
    await appliance.press()
    await appliance.until(lambda: "estop" in _causes(appliance, "safety.trip"), 10, "pressed")
    refused = await appliance.reset()
    assert not refused.accepted
    await appliance.press(False)
    assert (await appliance.reset()).accepted

    def audited(event: str) -> bool:
        return any(e["event"] == event for e in appliance.audit_entries())

    await appliance.until(lambda: audited("safety.reset"), 10, "the reset audited")
    lines = _complete_lines(appliance)
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(lines))
    code, said = _verify(whole)
    assert code == 0, said
    assert said.startswith(f"{whole}: ok, {len(lines)} entries")

    entries: list[dict[str, Any]] = [json.loads(line) for line in lines]
    hidden = max(i for i, e in enumerate(entries) if e["event"] == "safety.reset_refused")
    edited = tmp_path / "edited.jsonl"
    forged = lines[hidden].replace('"safety.reset_refused"', '"safety.reset"', 1)
    assert forged != lines[hidden]
    edited.write_text("".join([*lines[:hidden], forged, *lines[hidden + 1 :]]))
    code, said = _verify(edited)
    assert code == 1
    assert said.startswith(f"{edited}:{hidden + 1} (seq {hidden}): hash mismatch"), said

    removed = tmp_path / "removed.jsonl"
    removed.write_text("".join([*lines[:hidden], *lines[hidden + 1 :]]))
    code, said = _verify(removed)
    assert code == 1
    expected = f"{removed}:{hidden + 1} (seq {hidden + 1}): seq gap: expected {hidden}"
    assert said.startswith(expected), said
