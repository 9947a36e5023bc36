"""`edgeloop demo` brings Modbus, CAN and serial values into the World, fresh, and a
dashboard sees them: the demo's simulators, drivers and bridge, end to end."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from edgeloop.net.protocol import PROTOCOL_VERSION, Hello, Subscribe, encode, split

DEMO_WS = "ws://127.0.0.1:8080/ws"  # config/demo.yaml
GOOD = 0
# (component, field) of one input point of each bus in the demo config
FRESH = {("Press", "cycles"), ("Drive", "speed"), ("Climate", "temperature")}


async def _dashboard(deadline_s: float) -> ClientConnection:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while True:
        try:
            return await connect(DEMO_WS)
        except OSError:  # the io process is still starting
            assert loop.time() < until, "the demo's dashboard port never opened"
            await asyncio.sleep(0.2)


async def test_the_demo_shows_modbus_can_and_serial_values_flowing() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli", "demo", "--duration", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    names: dict[int, str] = {}
    cycles_seen: set[float] = set()
    try:
        async with await _dashboard(30) as dashboard:
            await dashboard.send(encode(Hello("test", "demo-viewer", "viewer", PROTOCOL_VERSION)))
            assert split(await asyncio.wait_for(dashboard.recv(), 10))[0] == "edgeloop.Welcome"
            wanted = ["Name", "Press", "Drive", "Climate", "DeviceHealth"]
            await dashboard.send(encode(Subscribe("world", 10.0, wanted)))

            def fresh() -> set[tuple[str, str]]:
                return {
                    (component, field)
                    for (_, component), values in latest.items()
                    for (c, field) in FRESH
                    if c == component and values.get(f"{field}_quality") == GOOD
                }

            def online() -> set[str]:
                return {
                    names.get(entity, "?")
                    for (entity, component), values in latest.items()
                    if component == "DeviceHealth" and values["state"] == "online"
                }

            loop = asyncio.get_running_loop()
            until = loop.time() + 45
            while not (
                fresh() == FRESH
                and {"plc1", "drive1", "climate1"} <= online()
                and len(cycles_seen) >= 3
            ):
                left = until - loop.time()
                assert left > 0, f"fresh: {fresh()}, online: {online()}, cycles: {cycles_seen}"
                name, _, payload = split(await asyncio.wait_for(dashboard.recv(), left))
                if name != "edgeloop.WorldUpdate":
                    continue
                for change in payload["changed"]:
                    key = (change["entity"], change["component"])
                    latest[key] = {**latest.get(key, {}), **change["values"]}
                    if change["component"] == "Name":
                        names[change["entity"]] = change["values"]["value"]
                    if change["component"] == "Press" and "cycles" in change["values"]:
                        cycles_seen.add(change["values"]["cycles"])
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            _, log = demo.communicate(timeout=30)
        finally:
            demo.kill()
    assert demo.returncode == 0, log.decode(errors="replace")[-3000:]
