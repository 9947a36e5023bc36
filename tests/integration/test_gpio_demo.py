"""The demo's beacon, end to end with real processes: a GPIO output of the ``gpio``
section on the simulated chip, next to the e-stop's line. A Modbus client lights it
through the demo's Modbus server (io process -> control process -> line); the e-stop
darkens it at once and holds it dark, refusing the client's writes, until a reset and a
new write. The line is read from outside, as `edgeloop gpio get` does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from edgeloop.demo_config import PORTS
from edgeloop.drivers.gpio.sim_client import NoSimChip, get_level
from tests.demo_place import DemoPlace, demo_place
from tests.integration.test_demo_field_devices import running_demo
from tests.integration.test_estop_demo import _edgeloop, _until_pressed

BEACON_LINE = 1  # config/demo.yaml: gpio.devices[0].points[0]
BEACON_COIL = 0  # modbus_server's coil for cell1.Beacon.lit
POLL_S = 0.1


async def _until(what: str, done: Callable[[], bool], deadline_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while not await asyncio.to_thread(done):
        assert loop.time() < until, f"not within {deadline_s} s: {what}"
        await asyncio.sleep(POLL_S)


def _beacon(place: DemoPlace) -> int | None:
    try:
        return get_level(place.run_dir / "state", BEACON_LINE)
    except NoSimChip:  # the control process is starting
        return None


async def _client(place: DemoPlace) -> AsyncModbusTcpClient:
    port = place.port_base + PORTS[("modbus_server", "port")]
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    loop = asyncio.get_running_loop()
    until = loop.time() + 30
    while not await client.connect():
        assert loop.time() < until, "the demo's Modbus server never listened"
        await asyncio.sleep(POLL_S)
    return client


async def _light(client: AsyncModbusTcpClient, place: DemoPlace) -> None:
    """Write the coil until the line is lit (the first writes may come before the
    control loop knows the field)."""

    def lit() -> bool:
        return _beacon(place) == 1

    loop = asyncio.get_running_loop()
    until = loop.time() + 30
    while True:
        await client.write_coil(BEACON_COIL, True, device_id=1)
        if await asyncio.to_thread(lit):
            return
        assert loop.time() < until, "the beacon never lit"
        await asyncio.sleep(POLL_S)


def _refused_while_held(audit: Path) -> bool:
    text = audit.read_text() if audit.exists() else ""
    return any(
        "cell1.Beacon.lit" in line and "the safe state holds it" in line
        for line in text.splitlines()
    )


async def test_the_beacon_follows_its_coil_goes_dark_on_estop_and_stays_until_written(
    tmp_path: Path,
) -> None:
    place = demo_place(tmp_path)
    config = str(place.run_dir / "config.yaml")
    async with running_demo(place, []):
        await _until("the simulated chip answers", lambda: _beacon(place) == 0, 45)
        client = await _client(place)
        try:
            await _light(client, place)

            await _until_pressed(place, "press")
            await _until("dark on the e-stop", lambda: _beacon(place) == 0)

            await client.write_coil(BEACON_COIL, True, device_id=1)
            audit = place.run_dir / "state" / "audit.jsonl"
            await _until("the write refused", lambda: _refused_while_held(audit))
            assert _beacon(place) == 0, "a write while held does not reach the line"

            await _until_pressed(place, "release")
            reset = await asyncio.to_thread(
                _edgeloop, "estop", "reset", "-c", config, "--token", "demo-operator"
            )
            assert reset.returncode == 0, reset.stdout + reset.stderr
            assert _beacon(place) == 0, "a reset restarts nothing by itself"
            await _light(client, place)
        finally:
            client.close()
