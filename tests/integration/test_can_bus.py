"""The CAN driver against python-can's virtual bus and the simulated drive.

Each test has its own virtual channel; the drive simulator and the driver run in one
event loop, with the control App on the real io channel (``tests.field_harness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import can
import pydantic
import pytest

from edgeloop.config import ConfigError, load_config
from edgeloop.drivers.can.codec import CAN_ERR_BUSOFF, CAN_ERR_RESTARTED, receive_filters
from edgeloop.drivers.can.config import CanConfig, load_dbc
from edgeloop.drivers.can.io import _BusLink
from edgeloop.drivers.can.plugin import SECTION
from edgeloop.drivers.can.sim import DriveSim, Fault
from edgeloop.drivers.points import Quality
from edgeloop.sim.ports import free_port
from tests.field_harness import Field, running_field

_channels = itertools.count()

STATUS_POINTS = [
    {"message": "DriveStatus", "signal": signal, "entity": "drive1", "component": "Drive",
     "field": field}
    for signal, field in [
        ("Speed", "speed"), ("Current", "current"), ("Temperature", "temperature"),
        ("DcVoltage", "dc_voltage"), ("Status", "status"),
    ]
]  # fmt: skip
COMMAND_POINTS = [
    {"message": "DriveCommand", "signal": "SpeedSetpoint", "entity": "drive1",
     "component": "Drive", "field": "speed_setpoint", "direction": "output"},
    {"message": "DriveCommand", "signal": "Enable", "entity": "drive1", "component": "Drive",
     "field": "enable", "direction": "output", "type": "bool"},
]  # fmt: skip


def channel_name() -> str:
    return f"can-test-{next(_channels)}-{id(_channels)}"


def drive_config(channel: str, **device: Any) -> CanConfig:
    return CanConfig.model_validate(
        {
            "bus": {"interface": "virtual", "channel": channel, "reopen_initial_s": 0.05},
            "devices": [
                {
                    "name": "drive1",
                    "dbc": "drive.dbc",
                    "points": STATUS_POINTS + COMMAND_POINTS,
                    "tx": [{"message": "DriveCommand", "period_ms": 20, "on_change": True}],
                    **device,
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def drive_on(channel: str) -> AsyncIterator[DriveSim]:
    """The simulated drive on its own end of the virtual channel."""
    bus = can.Bus(interface="virtual", channel=channel)
    sim = DriveSim(bus, period_s=0.02)
    task = asyncio.create_task(sim.run())
    try:
        yield sim
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        bus.shutdown()


def drive(field: Field) -> Any:
    return field.component("drive1", "Drive")


def all_good(field: Field) -> bool:
    return bool(drive(field).speed_quality == Quality.GOOD)


async def test_every_signal_type_reaches_the_world() -> None:
    channel = channel_name()
    signals = [
        {"name": "U8", "start": 0, "length": 8},
        {"name": "S16le", "start": 8, "length": 16, "signed": True, "scale": 0.1},
        {"name": "S16be", "start": 31, "length": 16, "byte_order": "big_endian", "signed": True},
        {"name": "U12be", "start": 47, "length": 12, "byte_order": "big_endian",
         "scale": 0.5, "offset": -100},
        {"name": "S4", "start": 56, "length": 4, "signed": True},
        {"name": "Flag", "start": 60, "length": 1},
    ]  # fmt: skip
    config = CanConfig.model_validate(
        {
            "bus": {"interface": "virtual", "channel": channel},
            "devices": [
                {
                    "name": "mixed",
                    "messages": [
                        {"name": "Mixed", "id": 0x123, "period_ms": 50, "signals": signals},
                        {
                            "name": "Ext",
                            "id": 0x18FF1234,
                            "extended": True,
                            "length": 2,
                            "signals": [{"name": "Word", "start": 0, "length": 16}],
                        },
                    ],
                    "rx": [{"message": "Ext", "period_ms": 50}],
                    "points": [
                        *(
                            {
                                "message": "Mixed",
                                "signal": s["name"],
                                "entity": "m",
                                "component": "Mixed",
                                "field": s["name"].lower(),
                            }
                            for s in signals
                            if s["name"] not in ("S16be", "Flag")
                        ),
                        {
                            "message": "Mixed",
                            "signal": "S16be",
                            "entity": "m",
                            "component": "Mixed",
                            "field": "s16be",
                            "scale": 2.0,
                            "offset": 1.0,
                        },
                        {
                            "message": "Mixed",
                            "signal": "Flag",
                            "entity": "m",
                            "component": "Mixed",
                            "field": "flag",
                            "type": "bool",
                        },
                        {
                            "message": "Ext",
                            "signal": "Word",
                            "entity": "m",
                            "component": "Mixed",
                            "field": "word",
                        },
                    ],
                }
            ],
        }
    )
    # Laid out by hand, not by cantools: 200 | -1234 LE | -300 BE | 0xABC BE | flag, -3
    mixed = bytes([200, 0x2E, 0xFB, 0xFE, 0xD4, 0xAB, 0xC0, 0x1D])
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        async with running_field(SECTION, config) as field:
            component = None

            def arrived(f: Field) -> bool:
                nonlocal component
                sender.send(can.Message(arbitration_id=0x123, data=mixed, is_extended_id=False))
                sender.send(can.Message(arbitration_id=0x18FF1234, data=b"\x34\x12"))
                component = f.component("m", "Mixed")
                return bool(component.word_quality == Quality.GOOD and component.u8 == 200)

            await field.until(arrived, timeout_s=10, what="both frames decoded")
            assert component is not None
            assert component.u8 == 200
            assert component.s16le == pytest.approx(-123.4)
            assert component.s16be == -599.0  # -300 x 2 + 1: the point's scale on top
            assert component.u12be == 1274.0  # 0xABC x 0.5 - 100
            assert component.s4 == -3
            assert component.flag is True
            assert component.word == 0x1234
            assert field.health("mixed").state == "online"
    finally:
        sender.shutdown()


async def test_drive_obeys_the_command_the_control_writes() -> None:
    channel = channel_name()
    async with drive_on(channel) as sim, running_field(SECTION, drive_config(channel)) as field:
        await field.until(all_good, what="drive status")
        assert drive(field).status == 0  # disabled until told otherwise
        drive(field).speed_setpoint = 600.0
        drive(field).enable = True
        await field.until(
            lambda f: abs(drive(f).speed - 600.0) < 10, timeout_s=15, what="speed near 600 rpm"
        )
        assert drive(field).status == 1
        assert sim.drive.enabled and sim.drive.setpoint_rpm == 600.0
        assert drive(field).current > 0.5 and drive(field).temperature >= 25
        assert 40 < drive(field).dc_voltage <= 48


async def test_command_frames_go_out_at_their_period() -> None:
    channel = channel_name()
    observer = can.Bus(interface="virtual", channel=channel)
    stamps: list[float] = []

    def count(_: Field) -> bool:
        while (frame := observer.recv(0)) is not None:
            if frame.arbitration_id == 0x201:
                stamps.append(frame.timestamp)
        return len(stamps) >= 51

    try:
        async with running_field(SECTION, drive_config(channel)) as field:
            await field.until(count, timeout_s=15, what="51 command frames")
    finally:
        observer.shutdown()
    # 50 periods of 20 ms; the io loop shares two cores with other tests.
    mean_period = (stamps[50] - stamps[0]) / 50
    assert mean_period == pytest.approx(0.020, rel=0.15), mean_period


async def test_foreign_frames_are_dropped() -> None:
    channel = channel_name()
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        async with drive_on(channel), running_field(SECTION, drive_config(channel)) as field:
            await field.until(all_good, what="drive status")
            foreign = [
                can.Message(arbitration_id=0x7FF, data=bytes(8), is_extended_id=False),
                # The status id as an extended frame is another frame.
                can.Message(arbitration_id=0x181, data=bytes(8), is_extended_id=True),
            ]
            for frame in foreign * 10:
                sender.send(frame)
            await field.until(lambda f: f.part.foreign >= 20, what="foreign frames seen")
            await field.tick(10)
            assert field.health("drive1").errors == ()
            assert drive(field).speed_quality == Quality.GOOD
    finally:
        sender.shutdown()


def test_receive_filters_pass_only_the_configured_frames() -> None:
    channel = channel_name()
    database = load_dbc("drive.dbc")
    status = database.get_message_by_name("DriveStatus")
    filtered = can.Bus(interface="virtual", channel=channel, can_filters=receive_filters([status]))
    sender = can.Bus(interface="virtual", channel=channel)
    try:
        for frame_id, extended in [(0x7FF, False), (0x181, True), (0x181, False)]:
            sender.send(can.Message(arbitration_id=frame_id, is_extended_id=extended))
        received = [
            (m.arbitration_id, m.is_extended_id) for m in iter(lambda: filtered.recv(0.2), None)
        ]
    finally:
        filtered.shutdown()
        sender.shutdown()
    assert received == [(0x181, False)]


async def test_garbage_frames_are_counted_and_marked_bad() -> None:
    channel = channel_name()
    async with drive_on(channel) as sim, running_field(SECTION, drive_config(channel)) as field:
        await field.until(all_good, what="drive status")
        sim.inject(Fault.GARBAGE, 0.5)
        await field.until(lambda f: drive(f).speed_quality == Quality.BAD, what="speed marked BAD")
        await field.until(
            lambda f: f.health("drive1").error_count("garbage") > 0, what="garbage counted"
        )
        assert "DriveStatus" in field.health("drive1").last_error
        await field.until(
            lambda f: all_good(f) and f.health("drive1").state == "online", what="recovered"
        )
        assert field.part.garbage > 0


async def test_silence_turns_values_stale_and_the_drive_offline_then_back() -> None:
    channel = channel_name()
    async with drive_on(channel) as sim, running_field(SECTION, drive_config(channel)) as field:
        await field.until(lambda f: f.health("drive1").state == "online", what="online")
        sim.inject(Fault.SILENCE, 1.5)
        await field.until(lambda f: drive(f).speed_quality == Quality.STALE, what="speed STALE")
        assert field.health("drive1").state in ("degraded", "offline")
        await field.until(lambda f: f.health("drive1").state == "offline", what="offline")
        # offline may come from the control side's watchdog first; the io side counts on
        await field.until(
            lambda f: f.health("drive1").error_count("timeout") >= 3, what="three timeouts"
        )
        await field.until(
            lambda f: all_good(f) and f.health("drive1").state == "online",
            timeout_s=10,
            what="back online",
        )


async def test_bus_off_and_error_passive_are_reported_and_recover() -> None:
    channel = channel_name()
    async with drive_on(channel) as sim, running_field(SECTION, drive_config(channel)) as field:
        await field.until(lambda f: f.health("drive1").state == "online", what="online")
        sim.inject(Fault.ERROR_PASSIVE, 0.5)
        await field.until(
            lambda f: "error-passive" in f.health("drive1").last_error, what="error-passive"
        )
        assert field.health("drive1").error_count("bus") == 1
        await field.until(lambda f: f.health("drive1").state == "online", what="online again")

        sim.inject(Fault.BUS_OFF, 1.0)
        await field.until(lambda f: "bus-off" in f.health("drive1").last_error, what="bus-off")
        await field.until(lambda f: drive(f).speed_quality == Quality.STALE, what="stale")
        assert field.health("drive1").error_count("bus") == 2
        await field.until(
            lambda f: all_good(f) and f.health("drive1").state == "online",
            timeout_s=10,
            what="recovered from bus-off",
        )
        assert field.part.links[0].state.value == "error-active"


async def test_a_bus_that_cannot_open_is_reported_and_retried() -> None:
    # No SocketCAN in this kernel (nor a can9 interface): opening fails every time.
    config = CanConfig.model_validate(
        {
            "bus": {
                "interface": "socketcan",
                "channel": "can9",
                "reopen_initial_s": 0.05,
                "reopen_max_s": 0.1,
            },
            "devices": [{"name": "drive1", "dbc": "drive.dbc", "points": STATUS_POINTS}],
        }
    )
    async with running_field(SECTION, config) as field:
        await field.until(
            lambda f: f.health("drive1").error_count("disconnect") >= 2, what="retried"
        )
        assert field.health("drive1").state == "offline"
        assert "cannot open" in field.health("drive1").last_error
        assert drive(field).speed_quality == Quality.STALE


async def test_a_write_out_of_range_is_refused_and_reported() -> None:
    channel = channel_name()
    async with running_field(SECTION, drive_config(channel)) as field:
        await field.tick(2)
        drive(field).speed_setpoint = 1e6  # the signal's range is +-16384 rpm
        await field.until(
            lambda f: f.health("drive1").error_count("write") == 1, what="write refused"
        )
        assert "speed_setpoint" in field.health("drive1").last_error


def test_a_config_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            can:
              bus: {interface: virtual, channel: x}
              devices:
                - name: drive1
                  dbc: drive.dbc
                  points:
                    - {message: DriveStatus, signal: Speed, entity: d, component: D, field: s}
                  timeout_periods: yes
            """
        )
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, sections=[SECTION])
    [problem] = raised.value.problems
    assert problem.line == 8 and "timeout_periods" in problem.message


def test_an_unknown_signal_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            can:
              interfaces:
                - {name: can0, interface: virtaul, channel: x}
              devices:
                - name: drive1
                  dbc: drive.dbc
                  points:
                    - {message: DriveStatus, signal: Sped, entity: d, component: D, field: s}
            """
        )
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, sections=[SECTION])
    messages = {problem.line: problem.message for problem in raised.value.problems}
    assert "did you mean 'virtual'" in messages[3]
    assert "did you mean 'Speed'" in messages[5]


async def test_the_simulator_process_over_udp_multicast(tmp_path: Path) -> None:
    # udp_multicast sockets listen on a port for every group: a port of its own keeps
    # this test apart from another run of it.
    port = free_port()
    group = "239.74.163.2"
    sim = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.drivers.can.sim", "--interface", "udp_multicast",
         "--channel", group, "--port", str(port), "--duration", "60"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = CanConfig.model_validate(
        {
            "bus": {
                "interface": "udp_multicast",
                "channel": group,
                # time to live 0: the frames stay on this host
                "options": {"port": port, "hop_limit": 0},
            },
            "devices": drive_config("x").model_dump()["devices"],
        }
    )
    assert sim.stdin is not None
    try:
        async with running_field(SECTION, config) as field:
            await field.until(all_good, timeout_s=20, what="status from the sim process")
            drive(field).speed_setpoint = -300.0
            drive(field).enable = True
            await field.until(
                lambda f: abs(drive(f).speed + 300.0) < 10, timeout_s=15, what="speed -300"
            )
            sim.stdin.write(b"silence 1\n")
            sim.stdin.flush()
            await field.until(lambda f: drive(f).speed_quality == Quality.STALE, what="stale")
            await field.until(all_good, timeout_s=10, what="status again")
    finally:
        sim.terminate()
        sim.wait(timeout=10)


async def test_a_bus_that_fails_is_reopened() -> None:
    channel = channel_name()
    async with drive_on(channel), running_field(SECTION, drive_config(channel)) as field:
        await field.until(all_good, what="drive status")
        link = field.part.links[0]
        failing = link.bus
        failing.shutdown()  # as an unplugged adapter: every recv() now raises
        await field.until(
            lambda f: f.health("drive1").error_count("disconnect") == 1, what="failure seen"
        )
        await field.until(
            lambda f: link.bus is not None and link.bus is not failing, what="bus reopened"
        )
        await field.until(
            lambda f: all_good(f) and f.health("drive1").state == "online", what="online again"
        )


def pair_point(signal: str) -> dict[str, Any]:
    return {
        "message": "Pair",
        "signal": signal,
        "entity": "p",
        "component": "Pair",
        "field": signal.lower(),
        "direction": "output",
    }


def pair_config(channel: str, **bus: Any) -> CanConfig:
    """A device commanded by one on-change-only frame of two 8-bit signals, no min/max."""
    signals = [{"name": "A", "start": 0, "length": 8}, {"name": "B", "start": 8, "length": 8}]
    return CanConfig.model_validate(
        {
            "bus": {"interface": "virtual", "channel": channel, "reopen_initial_s": 0.05, **bus},
            "devices": [
                {
                    "name": "pair",
                    "messages": [{"name": "Pair", "id": 0x300, "length": 2, "signals": signals}],
                    "points": [pair_point("A"), pair_point("B")],
                    "tx": [{"message": "Pair", "on_change": True}],
                }
            ],
        }
    )


def pair_frames(observer: can.BusABC, seen: list[bytes]) -> None:
    while (frame := observer.recv(0)) is not None:
        if frame.arbitration_id == 0x300:
            seen.append(bytes(frame.data))


async def test_a_value_too_wide_for_its_signal_fails_alone() -> None:
    channel = channel_name()
    observer = can.Bus(interface="virtual", channel=channel)
    seen: list[bytes] = []
    try:
        async with running_field(SECTION, pair_config(channel)) as field:
            await field.until(lambda f: f.part.links[0].bus is not None, what="bus open")
            pair = field.component("p", "Pair")
            pair.a = 300.0  # 8 bits hold 0..255: cantools raises OverflowError
            pair.b = 9.0

            def b_sent(f: Field) -> bool:
                pair_frames(observer, seen)
                return bytes([0, 9]) in seen

            await field.until(b_sent, what="B sent without A")
            health = field.health("pair")
            assert health.error_count("write") == 1
            assert "p.Pair.a = 300.0" in health.last_error
    finally:
        observer.shutdown()


async def test_a_write_while_bus_off_goes_out_on_recovery() -> None:
    channel = channel_name()
    observer = can.Bus(interface="virtual", channel=channel)
    seen: list[bytes] = []
    try:
        async with running_field(SECTION, pair_config(channel)) as field:
            link = field.part.links[0]
            await field.until(lambda f: link.bus is not None, what="bus open")
            observer.send(can.Message(arbitration_id=CAN_ERR_BUSOFF, is_error_frame=True))
            await field.until(lambda f: link.state.value == "bus-off", what="bus-off")
            field.component("p", "Pair").b = 7.0
            device = link.devices[0]
            await field.until(lambda f: device.tx["Pair"].values["B"] == 7.0, what="write in")
            observer.send(can.Message(arbitration_id=CAN_ERR_RESTARTED, is_error_frame=True))

            def sent(f: Field) -> bool:
                pair_frames(observer, seen)
                return bytes([0, 7]) in seen

            await field.until(sent, what="the frame after recovery")
            assert link.state.value == "error-active"
    finally:
        observer.shutdown()


async def test_a_write_while_the_bus_is_closed_goes_out_on_reopen() -> None:
    channel = channel_name()
    observer = can.Bus(interface="virtual", channel=channel)
    seen: list[bytes] = []
    try:
        # A reopen slow enough for the write to land while the bus is closed.
        config = pair_config(channel, reopen_initial_s=1.0)
        async with running_field(SECTION, config) as field:
            link = field.part.links[0]
            await field.until(lambda f: link.bus is not None, what="bus open")
            link.bus.shutdown()  # every recv() now raises: closed, reopened after a while
            await field.until(lambda f: link.bus is None, what="bus closed")
            field.component("p", "Pair").b = 5.0
            device = link.devices[0]
            await field.until(lambda f: device.tx["Pair"].values["B"] == 5.0, what="write in")
            assert link.bus is None, "the write landed while the bus was closed"

            def sent(f: Field) -> bool:
                pair_frames(observer, seen)
                return bytes([0, 5]) in seen

            await field.until(sent, timeout_s=15, what="the frame after reopening")
    finally:
        observer.shutdown()


async def test_stopping_while_the_bus_opens_shuts_down_what_was_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered = threading.Event()
    release = threading.Event()
    opened: list[can.BusABC] = []
    real_open = _BusLink._open

    def slow_open(self: _BusLink) -> can.BusABC:
        entered.set()
        release.wait(10)
        bus = real_open(self)
        opened.append(bus)
        return bus

    monkeypatch.setattr(_BusLink, "_open", slow_open)
    async with running_field(SECTION, pair_config(channel_name())) as field:
        await field.until(lambda f: entered.is_set(), what="opening")
        stopping = asyncio.create_task(field.part.links[0].stop())
        await field.tick(2)
        release.set()
        await asyncio.wait_for(stopping, 10)
        await field.until(lambda f: opened, what="the thread's bus")
        assert opened[0]._is_shutdown


@pytest.mark.parametrize("where", ["tx", "rx", "messages"])
def test_a_period_below_one_millisecond_is_refused(where: str) -> None:
    device: dict[str, Any] = {
        "name": "drive1",
        "dbc": "drive.dbc",
        "points": STATUS_POINTS + COMMAND_POINTS,
        "tx": [{"message": "DriveCommand", "period_ms": 20}],
    }
    if where == "tx":
        device["tx"] = [{"message": "DriveCommand", "period_ms": 0.01}]
    elif where == "rx":
        device["rx"] = [{"message": "DriveStatus", "period_ms": 0.5}]
    else:
        signal = {"name": "S", "start": 0, "length": 8}
        device = {
            "name": "d",
            "messages": [{"name": "M", "id": 1, "period_ms": 0.2, "signals": [signal]}],
            "points": [{"message": "M", "signal": "S", "entity": "d", "component": "D",
                        "field": "s"}],
        }  # fmt: skip
    with pytest.raises(pydantic.ValidationError, match="below the 1 ms floor"):
        CanConfig.model_validate(
            {"bus": {"interface": "virtual", "channel": "x"}, "devices": [device]}
        )
