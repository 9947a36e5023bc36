"""A press that lands during a tick is acted on once the system set under way has run,
not when the tick ends; the recording says after which set, and the replay acts on it
there too, to the same state hashes."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.config import RuntimeConfig, load_config
from edgeloop.data.recorder import add_recorder
from edgeloop.data.recording import RecordingWriter, read_recording
from edgeloop.data.replay import replay
from edgeloop.drivers.gpio.sim import socket_path
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.safety.estop import EStop
from edgeloop.safety.safe_state import SafeState
from edgeloop.schedule import ControlLogic, FixedUpdate, SensorInput
from edgeloop.world import World

PRESS_TICK = 5
TICKS = 12
EDGE_DEADLINE_S = 10.0


def _config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(
        f"runtime: {{state_dir: {state}, rate_hz: 20, record_hash_every: 1}}\n"
        "estop:\n  inputs:\n    - {chip: sim, offset: 0}\n"
    )
    return path


def _press_during(world: World) -> None:
    """SensorInput at PRESS_TICK: press, and return once the edge is on the line's fd
    (the chip's thread counts it there), as a press during this set would be."""
    if world.resource(Time).tick != PRESS_TICK:
        return
    line = world.resource(EStop).inputs[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"set 0 1", str(socket_path(world.resource(RuntimeConfig).state_dir)))
    poller = select.poll()
    poller.register(line.fileno(), select.POLLIN)
    deadline = time.monotonic() + EDGE_DEADLINE_S
    while not poller.poll(10):  # waits without the GIL: the chip's thread runs
        assert time.monotonic() < deadline, "the simulated chip never saw the press"


def test_a_press_during_a_tick_is_acted_on_after_the_set_under_way_and_replays(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    recording = tmp_path / "run.rec"
    app = App.from_config(config)
    add_recorder(app, RecordingWriter(recording, config))
    held_in_control_logic: dict[int, bool] = {}

    def observe(world: World) -> None:
        held_in_control_logic[world.resource(Time).tick] = world.resource(SafeState).active

    app.add_systems(FixedUpdate, _press_during, in_set=SensorInput)
    app.add_systems(FixedUpdate, observe, in_set=ControlLogic)
    loop = ControlLoop(app)
    try:
        loop.run(max_ticks=TICKS)
    finally:
        loop.close()

    # Before: the press would have waited for the tick's end, and ControlLogic of the
    # tick it landed in would have run with the outputs live.
    assert held_in_control_logic[PRESS_TICK - 1] is False
    assert held_in_control_logic[PRESS_TICK] is True
    _, events = read_recording(recording)
    wakes = [event for event in events if event[0] == "wake"]
    assert wakes == [["wake", PRESS_TICK, "estop", SensorInput.name]]

    def same_systems(replayed: App) -> None:  # a replay builds the App of the config
        replayed.add_systems(FixedUpdate, _press_during, in_set=SensorInput)

    result = replay(recording, tmp_path / "replay", change=same_systems)
    assert result.divergence is None, result.divergence
    assert result.hashes_checked >= TICKS - 2
    assert result.notes == []
