"""`edgeloop demo` brings Modbus, CAN and serial values into the World, fresh, and a
dashboard sees them: the demo's simulators, drivers and bridge, end to end. Each demo
runs on ports and in a run dir of its own, so two of them never meet."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from edgeloop.demo_config import PORT_COUNT
from edgeloop.net.protocol import PROTOCOL_VERSION, Hello, Subscribe, encode, split
from tests.demo_place import DemoPlace, demo_place

GOOD = 0
# (component, field) of one input point of each bus in the demo config
FRESH = {("Press", "cycles"), ("Drive", "speed"), ("Climate", "temperature")}
DEVICES = {"plc1", "drive1", "climate1"}
ROBOTS = 3  # edgeloop.demo_devices.DEMO_ROBOTS
WANTED = ["Name", "Press", "Drive", "Climate", "DeviceHealth", "Robot"]


@dataclass
class Seen:
    """What one dashboard has been told about the world."""

    latest: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    cycles: set[float] = field(default_factory=set)

    def take(self, payload: dict[str, Any]) -> None:
        for change in payload["changed"]:
            key = (change["entity"], change["component"])
            self.latest[key] = {**self.latest.get(key, {}), **change["values"]}
            if change["component"] == "Name":
                self.names[change["entity"]] = change["values"]["value"]
            if change["component"] == "Press" and "cycles" in change["values"]:
                self.cycles.add(change["values"]["cycles"])

    def fresh(self) -> set[tuple[str, str]]:
        return {
            (component, name)
            for (_, component), values in self.latest.items()
            for (c, name) in FRESH
            if c == component and values.get(f"{name}_quality") == GOOD
        }

    def online(self) -> set[str]:
        return {
            self.names.get(entity, "?")
            for (entity, component), values in self.latest.items()
            if component == "DeviceHealth" and values["state"] == "online"
        }

    def robots(self) -> set[int]:
        return {entity for entity, component in self.latest if component == "Robot"}

    def __str__(self) -> str:
        return f"fresh: {self.fresh()}, online: {self.online()}, robots: {len(self.robots())}"


@asynccontextmanager
async def running_demo(
    place: DemoPlace, log: list[str], options: Sequence[str] = ()
) -> AsyncIterator[None]:
    """`edgeloop demo` at ``place`` (with more ``options``); its stderr ends up in ``log``
    once it stopped."""
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeloop.cli",
            "demo",
            "--duration",
            "90",
            *place.options,
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            log.append((await asyncio.to_thread(demo.communicate, timeout=30))[1])
        finally:
            demo.kill()
    assert demo.returncode == 0, log[-1][-3000:]


async def _dashboard(place: DemoPlace, deadline_s: float) -> ClientConnection:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while True:
        try:
            return await connect(place.dashboard)
        except OSError:  # the io process is still starting
            assert loop.time() < until, "the demo's dashboard port never opened"
            await asyncio.sleep(0.2)


async def watch(
    place: DemoPlace,
    client_id: str,
    done: Callable[[Seen], bool],
    deadline_s: float,
    components: list[str] = WANTED,
) -> Seen:
    """A dashboard's view of the demo at ``place`` (of ``components``), once ``done``
    says it has seen enough."""
    seen = Seen()
    async with await _dashboard(place, 30) as dashboard:
        await dashboard.send(encode(Hello(client_id, "demo-viewer", "viewer", PROTOCOL_VERSION)))
        assert split(await asyncio.wait_for(dashboard.recv(), 10))[0] == "edgeloop.Welcome"
        await dashboard.send(encode(Subscribe("world", 10.0, components)))
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while not done(seen):
            left = until - loop.time()
            assert left > 0, f"{client_id}: {seen}"
            name, _, payload = split(await asyncio.wait_for(dashboard.recv(), left))
            if name == "edgeloop.WorldUpdate":
                seen.take(payload)
    return seen


async def test_the_demo_shows_modbus_can_and_serial_values_flowing(tmp_path: Path) -> None:
    def flowing(seen: Seen) -> bool:
        return seen.fresh() == FRESH and seen.online() >= DEVICES and len(seen.cycles) >= 3

    place = demo_place(tmp_path)
    log: list[str] = []
    async with running_demo(place, log):
        await watch(place, "test", flowing, 45)
    # where a person opens it, moved with the demo's ports
    page = place.dashboard.replace("ws://", "http://").removesuffix("ws")
    assert f"dashboard: {page}?token=demo-viewer (operator: {page}?token=demo-operator)" in log[0]


async def test_two_demos_at_once_each_show_their_own_robots_and_devices(tmp_path: Path) -> None:
    first, second = demo_place(tmp_path / "first"), demo_place(tmp_path / "second")
    while abs(first.port_base - second.port_base) < PORT_COUNT:
        second = demo_place(tmp_path / "second")

    def serving(seen: Seen) -> bool:
        return seen.online() >= DEVICES and len(seen.robots()) >= ROBOTS

    logs: list[str] = []
    async with running_demo(first, logs), running_demo(second, logs):
        views = await asyncio.gather(
            watch(first, "dashboard-first", serving, 60),
            watch(second, "dashboard-second", serving, 60),
        )
    for view in views:
        assert len(view.robots()) == ROBOTS, view  # not six: no robot reached the other
    second_log, first_log = logs  # the inner demo stops first
    assert "dashboard-first as viewer" in first_log
    assert "dashboard-second" not in first_log
    assert "dashboard-second as viewer" in second_log
    assert "dashboard-first" not in second_log
