"""The demo plant: deterministic, and actually holding its setpoints."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from edgeloop import App
from edgeloop.blocks.pid import Pid
from edgeloop.config import load_config
from edgeloop.demo_config import place_demo_config
from edgeloop.names import Name
from edgeloop.sim.plant import Pump, TankLevel
from tests.conftest import output_of_another_process

TICKS = 1000


def demo_app(run_dir: Path) -> App:
    """The demo's App, its state directory (and so its simulated GPIO chip) in
    ``run_dir``: an App of its own lines, whatever else runs."""
    with as_file(files("edgeloop.examples") / "demo.yaml") as source:
        return App.from_config(load_config(place_demo_config(source, run_dir, None)))


def demo_hashes(run_dir: Path, ticks: int = TICKS) -> list[str]:
    app = demo_app(run_dir)
    hashes = []
    for _ in range(ticks):
        app.run_for(1)
        hashes.append(app.world.state_hash())
    app.shutdown()  # its lines closed
    return hashes


def test_two_demo_runs_have_identical_state_at_every_tick(tmp_path: Path) -> None:
    first, second = demo_hashes(tmp_path / "first"), demo_hashes(tmp_path / "second")
    assert len(set(first)) > TICKS // 2, "the plant moves: hashes differ between ticks"
    assert first == second


def test_demo_state_hashes_match_in_another_process(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from tests.integration.test_demo import demo_hashes; "
        f"print(demo_hashes(Path({str(tmp_path / 'other')!r}))[-1])"
    )
    assert output_of_another_process(code) == demo_hashes(tmp_path / "here")[-1]


def test_demo_pids_bring_every_tank_to_its_setpoint(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    app.run_for(120 * 100)  # two minutes of plant time
    for name, level, pid in app.world.query(Name, TankLevel, Pid):
        assert abs(level.level_m - pid.setpoint) < 0.1 * pid.setpoint, name.value
    app.shutdown()


def test_shutdown_leaves_every_pump_stopped(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    app.run_for(500)
    assert any(pump.speed > 0 for pump in app.world.query(Pump))
    app.shutdown()
    assert all(pump.speed == 0.0 for pump in app.world.query(Pump))
