"""The e-stop of `edgeloop demo`, end to end with real processes: pressed from outside
on the simulated chip, every pump goes to its safe speed and the safety entity says why;
a reset while pressed is refused, after release accepted; the audit log holds it all
and verifies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.demo_place import DemoPlace, demo_place
from tests.integration.test_demo_field_devices import Seen, running_demo, watch

EDGELOOP = [sys.executable, "-m", "edgeloop.cli"]
WANTED = ["Name", "SafeStateStatus", "Pump", "DeviceHealth"]


def _edgeloop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=60, check=False
    )


async def _until_pressed(place: DemoPlace, action: str) -> None:
    """`edgeloop estop press|release`, retried while the control process is starting."""
    config = str(place.run_dir / "config.yaml")
    loop = asyncio.get_running_loop()
    until = loop.time() + 30
    while (done := await asyncio.to_thread(_edgeloop, "estop", action, "-c", config)).returncode:
        assert loop.time() < until, done.stderr
        await asyncio.sleep(0.2)


def _safety(seen: Seen) -> dict[str, object]:
    for (entity, component), values in seen.latest.items():
        if component == "SafeStateStatus" and seen.names.get(entity) == "safety":
            return values
    return {}


def _pumps(seen: Seen) -> list[object]:
    return [v.get("speed") for (_, c), v in seen.latest.items() if c == "Pump"]


async def test_press_latches_safe_outputs_and_only_a_reset_after_release_ends_it(
    tmp_path: Path,
) -> None:
    place = demo_place(tmp_path)
    config = str(place.run_dir / "config.yaml")
    async with running_demo(place, []):
        await watch(place, "before", lambda s: "plc1" in s.online(), 45, WANTED)
        await _until_pressed(place, "press")

        def held(seen: Seen) -> bool:
            safety = _safety(seen)
            pumps = _pumps(seen)
            return bool(safety.get("active")) and bool(pumps) and all(p == 0.0 for p in pumps)

        seen = await watch(place, "pressed", held, 20, WANTED)
        assert "estop (pressed)" in str(_safety(seen)["causes"])

        refused = await asyncio.to_thread(
            _edgeloop, "estop", "reset", "-c", config, "--token", "demo-operator"
        )
        assert refused.returncode == 1, refused.stderr
        assert "refused" in refused.stdout and "still active: estop" in refused.stdout

        await _until_pressed(place, "release")
        accepted = await asyncio.to_thread(
            _edgeloop, "estop", "reset", "-c", config, "--token", "demo-operator"
        )
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        await watch(place, "reset", lambda s: _safety(s).get("active") is False, 20, WANTED)

    audit = str(place.run_dir / "state" / "audit.jsonl")
    verified = _edgeloop("audit", "verify", "--file", audit)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    tail = _edgeloop("audit", "tail", "--file", audit, "-n", "200").stdout
    for event in ("estop.press", "safety.reset_refused", "estop.release", "safety.reset"):
        assert event in tail, tail
