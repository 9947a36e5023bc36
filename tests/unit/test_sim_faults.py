"""The simulators' fault commands, as typed on their stdin."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from edgeloop.drivers.sim_faults import FaultSchedule, apply_command


class Fault(enum.Enum):
    DELAY = "delay"
    SILENCE = "silence"


class Target:
    def __init__(self) -> None:
        self.injected: list[tuple[Any, float, float]] = []
        self.cleared = False

    def inject(self, fault: Any, duration_s: float, delay_s: float = 0.0) -> None:
        self.injected.append((fault, duration_s, delay_s))

    def clear(self) -> None:
        self.cleared = True


def test_commands_inject_and_clear_faults() -> None:
    sim = Target()
    assert apply_command(sim, Fault, "silence 5\n") == "silence on"
    assert apply_command(sim, Fault, "delay 0.2 10") == "delay on"
    assert sim.injected == [(Fault.SILENCE, 5.0, 0.0), (Fault.DELAY, 10.0, 0.2)]
    assert apply_command(sim, Fault, "clear") == "cleared" and sim.cleared


def test_a_wrong_command_answers_with_the_usage_and_changes_nothing() -> None:
    sim = Target()
    assert "unknown command 'explode 1'" in apply_command(sim, Fault, "explode 1")
    assert apply_command(sim, Fault, "silence") == (
        "commands: delay SECONDS DURATION | (silence) DURATION | clear"
    )
    assert apply_command(sim, Fault, "   ") == ""
    assert sim.injected == [] and not sim.cleared


async def test_a_scheduled_fault_is_on_until_its_end_and_clear_ends_all() -> None:
    faults: FaultSchedule[Fault] = FaultSchedule(logging.getLogger("tests.sim_faults"))
    now = asyncio.get_running_loop().time()
    faults.start(Fault.DELAY, 10.0, delay_s=0.2)
    faults.start(Fault.SILENCE, 1.0)
    assert faults.active(Fault.DELAY) and faults.delay_s == 0.2
    assert faults.ended(now) == []
    assert faults.ended(now + 2.0) == [Fault.SILENCE]
    assert not faults.active(Fault.SILENCE) and faults.active(Fault.DELAY)
    faults.clear()
    assert faults.ended(asyncio.get_running_loop().time()) == [Fault.DELAY]
    assert not faults.active(Fault.DELAY)
