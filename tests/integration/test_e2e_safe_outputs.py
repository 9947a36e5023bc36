"""End to end against a running `edgeloop run` of the demo config: what leaves the
appliance when it goes safe, as the devices see it. A PLC (Modbus), a drive (CAN) and
robots (TCP) around it, an HMI writing through its Modbus server; the e-stop pressed on
the simulated chip, a robot gone silent, writes out of bounds.

One appliance serves the module (starting one costs seconds); each test leaves it as it
found it: e-stop released and reset, its robots gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient

from edgeloop.drivers.modbus.codec import encode
from edgeloop.net.client import Client
from edgeloop.sim.robots import Command, CommandResult
from tests.integration.test_demo_field_devices import Seen, watch
from tests.running_appliance import Appliance, running_appliance

pytestmark = pytest.mark.asyncio(loop_scope="module")

WATCHDOG_S = 1.0  # robots: the test config's, short so a test waits little
RUN_COIL = 0  # press1.Press.run on the PLC (config/demo.yaml)
SERVED_RUN = 1  # ... and on the appliance's Modbus server (added here; 0 is the beacon's)
SERVED_SPEED = 200  # drive1.Drive.speed_setpoint there, float32, no bounds of its own
SERVED_TANK1_SETPOINT = 100  # config/demo.yaml: min 0.0, max 2.0
DRIVE_MAX_RPM = 3000  # config/demo.yaml: the CAN point's max
# Press to safe value on the wire. The target is a tick (bench/estop.py measures it);
# this only bounds it on a loaded 2-core box, where a second means it did not happen.
SAFE_WITHIN_S = 2.0
DRIVE_WATCHDOG_S = 0.5
DRIVE_SILENT_S = 3
WANTED = ["Name", "Robot", "SafeStateStatus"]


def _edit(config: dict[str, Any]) -> None:
    config["robots"]["watchdog_s"] = WATCHDOG_S
    # The demo's drive watchdog is 3 status periods (60 ms): a loaded box trips it now
    # and then, and a test of the drive's silence must be the only one that does.
    config["can"]["devices"][0]["watchdog_s"] = DRIVE_WATCHDOG_S
    config["modbus_server"]["points"] += [
        {"entity": "press1", "component": "Press", "field": "run", "table": "coil",
         "address": SERVED_RUN, "writable": True},
        {"entity": "drive1", "component": "Drive", "field": "speed_setpoint", "type": "float32",
         "address": SERVED_SPEED, "writable": True, "unit": "rpm"},
    ]  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def appliance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Appliance]:
    async with running_appliance(tmp_path_factory.mktemp("safe-outputs"), _edit) as running:
        yield running


@asynccontextmanager
async def _hmi(appliance: Appliance) -> AsyncIterator[AsyncModbusTcpClient]:
    """A Modbus client of the appliance's Modbus server, as an HMI is."""
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=appliance.modbus_server_port, timeout=2, retries=0
    )
    give_up = time.monotonic() + 10
    while not await client.connect():  # the io process's server may still be binding
        assert time.monotonic() < give_up, "the appliance's Modbus server never answered"
        await asyncio.sleep(0.2)
    try:
        yield client
    finally:
        client.close()


async def _answer(operator: Client, command_id: int) -> CommandResult:
    while True:
        msg = await operator.receive()
        if isinstance(msg, CommandResult) and msg.command_id == command_id:
            return msg


async def _move(appliance: Appliance, robot_id: str, command_id: int) -> CommandResult:
    """An operator's ``move`` for ``robot_id``: the appliance's first answer."""
    async with appliance.operator() as operator:
        await operator.send(Command(robot_id, "move", 2.0, command_id=command_id))
        return await _answer(operator, command_id)


def _robot(seen: Seen, robot_id: str) -> dict[str, Any]:
    for (entity, component), values in seen.latest.items():
        if component == "Robot" and seen.names.get(entity) == robot_id:
            return values
    return {}


def _safety(seen: Seen) -> dict[str, Any]:
    for (entity, component), values in seen.latest.items():
        if component == "SafeStateStatus" and seen.names.get(entity) == "safety":
            return values
    return {}


def _drive_offline(seen: Seen) -> bool:
    return (
        any(
            c == "DeviceHealth" and seen.names.get(e) == "drive1" and v["state"] == "offline"
            for (e, c), v in seen.latest.items()
        )
        and "plc1" in seen.online()
    )


def _estop_ended(seen: Seen) -> bool:
    causes = _safety(seen).get("causes")
    return isinstance(causes, str) and "estop" not in causes


def _audited(appliance: Appliance, event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        entry
        for entry in appliance.audit_entries()
        if entry["event"] == event and all(entry.get(k) == v for k, v in fields.items())
    ]


async def _release_and_reset(appliance: Appliance) -> None:
    await appliance.press(False)
    reset = await appliance.reset()
    assert reset.accepted, reset.reason


async def test_press_sends_every_safe_value_to_the_plc_the_drive_and_the_robot(
    appliance: Appliance,
) -> None:
    async with appliance.robot("arm-1") as robot, _hmi(appliance) as hmi:
        await watch(appliance.place, "arm", lambda s: bool(_robot(s, "arm-1")), 20, WANTED)
        # The machine running: the HMI switches the press on and sets the drive's speed.
        started = time.monotonic()
        assert not (await hmi.write_coil(SERVED_RUN, True, device_id=1)).isError()
        speed = encode("float32", 1500.0)
        assert not (await hmi.write_registers(SERVED_SPEED, speed, device_id=1)).isError()
        plc, can = appliance.plc, appliance.can
        await appliance.until(lambda: True in plc.coil_writes(RUN_COIL, started), 10, "run on")
        await appliance.until(
            lambda: any(c["SpeedSetpoint"] == 1500 for c in can.commands(started)), 10, "1500"
        )

        pressed = await appliance.press()
        try:
            plc_at = await appliance.until(
                lambda: False in plc.coil_writes(RUN_COIL, pressed), 10, "the PLC's run coil off"
            )
            can_at = await appliance.until(
                lambda: any(c["SpeedSetpoint"] == 0 for c in can.commands(pressed)), 10, "0 rpm"
            )
            robot_at = await appliance.until(lambda: bool(robot.stops(pressed)), 10, "a stop")
            for what, at in (("PLC", plc_at), ("CAN", can_at), ("robot", robot_at)):
                assert at - pressed < SAFE_WITHIN_S, f"{what}: {at - pressed:.3f} s after press"
            assert set(plc.coil_writes(RUN_COIL, pressed)) == {False}
            # The frame after the first safe one says 0 too: the setpoint stays safe.
            await appliance.until(lambda: len(can.commands(can_at)) >= 3, 10, "more frames")
            assert {(c["SpeedSetpoint"], c["Enable"]) for c in can.commands(can_at)} == {(0, 0)}

            async with appliance.robot("late-1") as late:  # one that connects while held
                await appliance.until(lambda: bool(late.stops()), 10, "late-1 stopped")

            refused = await _move(appliance, "arm-1", command_id=41)
            assert not refused.accepted
            assert "safe state holds" in refused.reason and "estop" in refused.reason
            assert "move" not in {c.action for _, c in robot.commands}, "no move reached it"

            reset = await appliance.reset()
            assert not reset.accepted and "estop" in reset.reason
        finally:
            await _release_and_reset(appliance)
        # (Not inactive: late-1, gone, is a robot silent past its deadline by now.)
        await watch(appliance.place, "reset", _estop_ended, 20, WANTED)
    # A reset does not restart the machine: the run coil was not written on again.
    assert set(plc.coil_writes(RUN_COIL, pressed)) == {False}


async def test_a_plc_output_changed_behind_the_appliance_is_made_safe_on_press(
    appliance: Appliance,
) -> None:
    """The appliance last wrote the run coil off; the PLC's own program (or a local
    panel) switched it on since. The press must still put it off: a safe value is sent,
    not assumed."""
    await appliance.until(
        lambda: appliance.plc.coil_writes(RUN_COIL)[-1:] == [False], 10, "the run coil off"
    )
    appliance.plc.write(1, "coil", RUN_COIL, [True])
    pressed = await appliance.press()
    try:
        await appliance.until(
            lambda: False in appliance.plc.coil_writes(RUN_COIL, pressed), 10, "run coil off"
        )
    finally:
        await _release_and_reset(appliance)
    assert appliance.plc.read(1, "coil", RUN_COIL, 1) == [False]


async def test_a_silent_robot_is_disconnected_alarmed_and_stopped_alone(
    appliance: Appliance,
) -> None:
    async with appliance.robot("quiet-1") as quiet, appliance.robot("busy-1") as busy:

        def both(seen: Seen) -> bool:
            return all(_robot(seen, r).get("status") == "idle" for r in ("quiet-1", "busy-1"))

        await watch(appliance.place, "robots", both, 20, WANTED)
        quiet.talking = False  # connected, but not a word more
        silent = time.monotonic()

        seen = await watch(
            appliance.place,
            "silent",
            lambda s: _robot(s, "quiet-1").get("status") == "disconnected",
            WATCHDOG_S + 10,
            WANTED,
        )
        assert _robot(seen, "busy-1").get("status") == "idle"
        stopped = await appliance.until(lambda: bool(quiet.stops(silent)), 10, "quiet-1 stopped")
        # Not before its deadline (less the telemetry period it may have had left).
        assert stopped - silent > WATCHDOG_S - quiet.PERIOD_S
        await appliance.until(
            lambda: bool(_audited(appliance, "safety.trip", cause="watchdog:quiet-1")), 10, "trip"
        )
        alarm = dict(source="watchdog:quiet-1", state="active_unacked", severity="fault")
        await appliance.until(lambda: bool(_audited(appliance, "alarm", **alarm)), 10, "alarm")

        refused = await _move(appliance, "quiet-1", command_id=51)
        assert not refused.accepted and "watchdog:quiet-1" in refused.reason
        sent = await _move(appliance, "busy-1", command_id=52)
        assert sent.accepted, sent.reason  # the other robot is not held
        assert not busy.stops(silent)

        quiet.talking = True  # heard again: recovery auto
        await watch(
            appliance.place, "back", lambda s: _robot(s, "quiet-1").get("status") == "idle", 20,
            WANTED,
        )  # fmt: skip
        await appliance.until(
            lambda: bool(_audited(appliance, "safety.end", cause="watchdog:quiet-1")), 10, "end"
        )


async def test_a_silent_drive_gets_its_safe_setpoint_and_only_it(appliance: Appliance) -> None:
    can, plc = appliance.can, appliance.plc
    async with _hmi(appliance) as hmi:
        started = time.monotonic()
        speed = encode("float32", 1200.0)
        assert not (await hmi.write_registers(SERVED_SPEED, speed, device_id=1)).isError()
        await appliance.until(
            lambda: any(c["SpeedSetpoint"] == 1200 for c in can.commands(started)), 10, "1200"
        )
        appliance.fault("can", f"silence {DRIVE_SILENT_S}")
        await _wait_audited(appliance, "safety.trip", cause="watchdog:drive1")
        await _wait_audited(
            appliance, "alarm", source="watchdog:drive1", state="active_unacked", severity="fault"
        )
        tripped = time.monotonic()
        # The dashboards' mirror may lag the audit log a little on a loaded box.
        seen = await watch(appliance.place, "drive", _drive_offline, 10, ["Name", "DeviceHealth"])
        assert "plc1" in seen.online()
        # The bus carries the safe setpoint to the silent drive; the PLC is not held.
        assert not (await hmi.write_coil(SERVED_RUN, True, device_id=1)).isError()
        await appliance.until(lambda: True in plc.coil_writes(RUN_COIL, tripped), 10, "run on")
        await appliance.until(lambda: len(can.commands(tripped)) >= 3, 10, "frames")
        assert {c["SpeedSetpoint"] for c in can.commands(tripped)} == {0}

        ended = await appliance.until(
            lambda: bool(_audited(appliance, "safety.end", cause="watchdog:drive1")),
            DRIVE_SILENT_S + 10,
            "heard again",
        )
        await appliance.until(lambda: len(can.commands(ended)) >= 3, 10, "frames after")
        assert {c["SpeedSetpoint"] for c in can.commands(ended)} == {0}, "no surprise restart"
        assert not (await hmi.write_coil(SERVED_RUN, False, device_id=1)).isError()
        await appliance.until(lambda: plc.coil_writes(RUN_COIL)[-1:] == [False], 10, "run off")


async def test_writes_out_of_bounds_are_refused_with_a_reason_and_audited(
    appliance: Appliance,
) -> None:
    async with _hmi(appliance) as hmi:
        started = time.monotonic()
        # Beyond the drive's max: the Modbus server takes it (its point has no bounds),
        # the drive's output refuses it.
        too_fast = await hmi.write_registers(SERVED_SPEED, encode("float32", 5000.0), device_id=1)
        assert not too_fast.isError()
        refusals = await _wait_audited(
            appliance, "output.refused", device="drive1", what="drive1.Drive.speed_setpoint"
        )
        assert refusals[-1]["value"] == 5000.0
        assert refusals[-1]["reason"] == f"5000 is above max {DRIVE_MAX_RPM}"
        refused_at = time.monotonic()
        await appliance.until(lambda: len(appliance.can.commands(refused_at)) >= 3, 10, "frames")
        assert all(c["SpeedSetpoint"] != 5000 for c in appliance.can.commands(started))

        # Beyond the served point's own max: refused by the server, with exception 3.
        too_high = encode("float32", 5.0)
        answer = await hmi.write_registers(SERVED_TANK1_SETPOINT, too_high, device_id=1)
        assert answer.isError() and answer.exception_code == 3
        what = "modbus_server write tank1.Pid.setpoint"
        (refused,) = await _wait_audited(appliance, "command", what=what, value=5.0)
        assert (refused["accepted"], refused["reason"]) == (False, "5 is above max 2")
        assert refused["by"].startswith("modbus client 127.0.0.1:")

        # Within bounds: applied, and audited as accepted.
        within = encode("float32", 1.0)
        assert not (await hmi.write_registers(SERVED_TANK1_SETPOINT, within, device_id=1)).isError()
        (accepted,) = await _wait_audited(appliance, "command", what=what, value=1.0)
        assert (accepted["accepted"], accepted["reason"]) == (True, "applied")


async def _wait_audited(appliance: Appliance, event: str, **fields: Any) -> list[dict[str, Any]]:
    await appliance.until(lambda: bool(_audited(appliance, event, **fields)), 10, event)
    return _audited(appliance, event, **fields)
