"""The demo plant: deterministic, and actually holding its setpoints."""

from __future__ import annotations

from importlib.resources import as_file, files

from edgeloop import App
from edgeloop.blocks.pid import Pid
from edgeloop.config import load_config
from edgeloop.names import Name
from edgeloop.sim.plant import Pump, TankLevel
from tests.conftest import output_of_another_process

TICKS = 1000


def demo_app() -> App:
    with as_file(files("edgeloop.examples") / "demo.yaml") as path:
        return App.from_config(load_config(path))


def demo_hashes(ticks: int = TICKS) -> list[str]:
    app = demo_app()
    hashes = []
    for _ in range(ticks):
        app.run_for(1)
        hashes.append(app.world.state_hash())
    return hashes


def test_two_demo_runs_have_identical_state_at_every_tick() -> None:
    first, second = demo_hashes(), demo_hashes()
    assert len(set(first)) > TICKS // 2, "the plant moves: hashes differ between ticks"
    assert first == second


def test_demo_state_hashes_match_in_another_process() -> None:
    code = "from tests.integration.test_demo import demo_hashes; print(demo_hashes()[-1])"
    assert output_of_another_process(code) == demo_hashes()[-1]


def test_demo_pids_bring_every_tank_to_its_setpoint() -> None:
    app = demo_app()
    app.run_for(120 * 100)  # two minutes of plant time
    for name, level, pid in app.world.query(Name, TankLevel, Pid):
        assert abs(level.level_m - pid.setpoint) < 0.1 * pid.setpoint, name.value


def test_shutdown_leaves_every_pump_stopped() -> None:
    app = demo_app()
    app.run_for(500)
    assert any(pump.speed > 0 for pump in app.world.query(Pump))
    app.shutdown()
    assert all(pump.speed == 0.0 for pump in app.world.query(Pump))
