"""Record and replay: a real `edgeloop demo` (robots, Modbus, CAN and serial traffic,
an e-stop press and reset) recorded with `--record`, then replayed in one process to
the same state hash at every recorded tick; and a replay with one system changed
reports the divergence at the first hash after the change, naming what differs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from edgeloop.app import App
from edgeloop.data.replay import replay
from edgeloop.net.protocol import PROTOCOL_VERSION, Hello, Subscribe, encode, split
from edgeloop.schedule import ControlLogic, FixedUpdate
from edgeloop.sim.plant import TankLevel
from edgeloop.world import World
from tests.demo_place import DemoPlace, demo_place
from tests.integration.test_demo_field_devices import DEVICES, Seen, running_demo, watch
from tests.integration.test_estop_demo import _edgeloop, _safety, _until_pressed

CHANGED_AT = 255  # the tick from which the changed system acts
HASH_EVERY = 100  # runtime.record_hash_every's default
# The recording must hold a hash after CHANGED_AT, and some ticks past the reset.
RUN_ON_TICKS = 2 * HASH_EVERY


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp_path = tmp_path_factory.mktemp("replay")
    path = tmp_path / "demo.rec"
    asyncio.run(_record_demo(tmp_path, path))
    yield path


async def _record_demo(tmp_path: Path, path: Path) -> None:
    place = demo_place(tmp_path)
    log: list[str] = []
    async with running_demo(place, log, ["--record", str(path)]):
        wanted = ["Name", "DeviceHealth", "Robot", "SafeStateStatus"]

        def everything_flows(seen: Seen) -> bool:
            return seen.online() >= DEVICES and len(seen.robots()) == 3

        await watch(place, "flowing", everything_flows, 60, wanted)
        await _until_pressed(place, "press")
        await watch(place, "pressed", lambda s: bool(_safety(s).get("active")), 20, wanted)
        await _until_pressed(place, "release")
        config = str(place.run_dir / "config.yaml")
        reset = await asyncio.to_thread(
            _edgeloop, "estop", "reset", "-c", config, "--token", "demo-operator"
        )
        assert reset.returncode == 0, reset.stdout + reset.stderr
        await watch(place, "reset", lambda s: _safety(s).get("active") is False, 20, wanted)
        # On a quiet machine all of the above takes < 300 ticks.
        at_reset = await _tick(place, 0)
        await _tick(place, max(at_reset, CHANGED_AT) + RUN_ON_TICKS)


async def _tick(place: DemoPlace, at_least: int) -> int:
    """The demo's control tick once it is ``at_least`` (its ``loop`` topic on /ws)."""
    async with connect(place.dashboard, max_size=None) as ws:
        await ws.send(encode(Hello("replay-test", "demo-viewer", "viewer", PROTOCOL_VERSION)))
        await ws.send(encode(Subscribe("loop")))
        async with asyncio.timeout(60):
            while True:
                name, _, payload = split(await ws.recv())
                if name == "edgeloop.LoopStatus" and payload["ticks"] >= at_least:
                    return int(payload["ticks"])


def test_a_recorded_demo_replays_to_every_recorded_state_hash(
    recording: Path, tmp_path: Path
) -> None:
    result = replay(recording, tmp_path)
    assert result.divergence is None, result.divergence
    assert result.end == "stopped", "the recording ran to the demo's stop"
    assert result.ticks > 300 and result.hashes_checked >= result.ticks // 100 - 1
    cli = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "replay", str(recording)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith(f"identical: {result.ticks} ticks replayed")


def test_a_changed_system_diverges_at_the_first_hash_after_the_change(
    recording: Path, tmp_path: Path
) -> None:
    def change(app: App) -> None:
        def leak(world: World) -> None:
            if app.time.tick >= CHANGED_AT:
                for level in world.query(TankLevel):
                    level.level_m += 1e-9

        app.add_systems(FixedUpdate, leak, in_set=ControlLogic)

    result = replay(recording, tmp_path, change)
    assert result.divergence is not None
    assert result.divergence.tick == 300, "hashes every 100 ticks: the first after 255"
    assert "edgeloop.sim.plant.TankLevel" in result.divergence.components
