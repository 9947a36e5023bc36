"""One writer per field, found when the config is loaded and named by both config lines;
the wiring table `edgeloop wiring` prints; a tick whose input order is declared, not
taken from the order of the YAML sections."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import pytest

from edgeloop import cli
from edgeloop.app import App
from edgeloop.config import Config, ConfigError, load_config
from edgeloop.schedule import (
    FieldInput,
    FixedUpdate,
    IoReceive,
    ModbusServerInput,
    NetworkReceive,
    SensorInput,
)
from edgeloop.wiring import Claim, WiredField, render, table

PLC = """\
modbus:
  lines:
    - tcp: {host: 127.0.0.1, port: 5020}
      devices:
        - name: plc1
          points:
            - {entity: press1, component: Press, field: cycles, table: holding, address: 0}
            - {entity: press1, component: Press, field: run, table: coil, address: 0, direction: output, safe_value: false}
"""  # noqa: E501 - a point a line, as the docs write them


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, text)
    return [str(problem) for problem in refused.value.problems]


def _demo_text() -> str:
    with as_file(files("edgeloop.examples") / "demo.yaml") as source:
        return source.read_text()


def test_a_modbus_server_write_to_a_driver_input_names_both_config_lines(
    tmp_path: Path,
) -> None:
    served = """\
modbus_server:
  points:
    - {entity: press1, component: Press, field: cycles, address: 0, writable: true}
"""
    (problem,) = _problems(tmp_path, PLC + served)
    file = tmp_path / "config.yaml"
    assert problem.startswith(f"{file}:11:7: modbus_server.points[0]: press1.Press.cycles is ")
    assert "written by modbus_server points[0] (Modbus-server write)" in problem
    assert f"by modbus plc1 points[0] (driver input, {file}:7:15)" in problem


def test_a_block_writing_a_field_a_simulator_writes_is_refused(tmp_path: Path) -> None:
    text = """\
tank_plant:
  tanks:
    - name: tank1
blocks:
  scale:
    - {name: s1, input: tank1.TankLevel.level_m, output: tank1.Pump.speed}
"""
    (problem,) = _problems(tmp_path, text)
    assert ":6:7: blocks.scale[0]: tank1.Pump.speed is written by blocks.scale 's1'" in problem
    assert "and by pid_to_pump (system, " in problem and "config.yaml:3:7)" in problem


def test_a_robot_field_is_one_writer_whatever_the_entity(tmp_path: Path) -> None:
    text = """\
robots: {}
tank_plant:
  tanks:
    - name: tank1
blocks:
  scale:
    - {name: s1, input: tank1.TankLevel.level_m, output: arm1.Robot.position}
"""
    (problem,) = _problems(tmp_path, text)
    assert "arm1.Robot.position is written by blocks.scale 's1'" in problem
    assert "by robots_from_telemetry (network input robot.Telemetry" in problem


def test_output_points_of_several_devices_may_read_one_field(tmp_path: Path) -> None:
    second = """\
        - name: plc2
          unit_id: 2
          points:
            - {entity: press1, component: Press, field: run, table: coil, address: 0, direction: output}
"""  # noqa: E501
    config = _load(tmp_path, PLC + second)
    (run,) = [f for f in table(config.wiring, config.where) if f.field == "press1.Press.run"]
    assert run.writer == ""
    assert run.readers == [
        "modbus plc1 points[1] (driver output)",
        "modbus plc2 points[0] (driver output)",
    ]
    assert (run.min, run.max, run.safe_value) == (None, None, False)


def test_check_config_refuses_a_double_writer_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _demo_text().replace("field: pressure, table: input", "field: cycles, table: input")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert cli.main(["check-config", str(path)]) == cli.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    # The demo's lines of the two points: found, so that editing the demo moves them too.
    lines = text.splitlines()
    first = lines.index(next(line for line in lines if "field: cycles" in line)) + 1
    where = "modbus.lines[0].devices[0].points[1]"
    assert f"{path}:{first + 1}:15: {where}: press1.Press.cycles" in err
    assert f"modbus plc1 points[0] (driver input, {path}:{first}:15)" in err


def test_the_demo_wiring_names_each_writer_its_line_readers_and_bounds(
    tmp_path: Path,
) -> None:
    text = _demo_text()
    config = _load(tmp_path, text)
    fields = {f.field: f for f in table(config.wiring, config.where)}
    setpoint = fields["tank1.Pid.setpoint"]
    assert setpoint.writer == "modbus_server points[2] (Modbus-server write)"
    # The line of modbus_server's points[2]: found, so that editing the demo moves it too.
    lines = text.splitlines()
    served = lines.index("modbus_server:")
    line = next(i for i in range(served, len(lines)) if "field: setpoint" in lines[i]) + 1
    assert setpoint.writer_at == f"{tmp_path / 'config.yaml'}:{line}:7"
    assert setpoint.readers == [
        "run_pid (system)",
        "modbus_server points[2] (Modbus-server read)",
    ]
    assert (setpoint.min, setpoint.max, setpoint.safe_value) == (0.0, 2.0, None)
    drive = fields["drive1.Drive.speed_setpoint"]
    assert (drive.writer, drive.readers) == ("", ["can drive1 points[3] (driver output)"])
    assert (drive.min, drive.max, drive.safe_value) == (0.0, 3000.0, 0.0)
    assert fields["tank1.Pump.speed"].safe_value == 0.0
    assert fields["room1.Climate.humidity"].writer == "serial climate1 points[1] (driver input)"


def test_edgeloop_wiring_prints_a_line_a_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(PLC)
    assert cli.main(["wiring", "-c", str(path)]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["FIELD", "WRITER", "READERS", "MIN", "MAX", "SAFE"]
    assert out[1].split() == [
        "press1.Press.cycles", "modbus", "plc1", "points[0]", "(driver", "input)", "at",
        f"{path}:7:15", "-", "-", "-", "-",
    ]  # fmt: skip
    assert out[2].split() == [
        "press1.Press.run", "-", "modbus", "plc1", "points[1]", "(driver", "output)",
        "-", "-", "false",
    ]  # fmt: skip


def test_render_lines_up_its_columns() -> None:
    rows = [
        WiredField("a.B.c", "w", "f:1:1", ["r1", "r2"], 0.0, 2.5),
        WiredField("x.Y.zz", "", "", []),
    ]
    head, first, second = render(rows).splitlines()
    assert first.split() == ["a.B.c", "w", "at", "f:1:1", "r1,", "r2", "0", "2.5", "-"]
    assert second.split() == ["x.Y.zz", "-", "-", "-", "-", "-"]
    assert head.index("READERS") == first.index("r1,") == second.index("-", len("x.Y.zz  -"))
    assert head.index("MAX") == first.index("2.5")


def _fixed_update(config: Config) -> list[tuple[str, str]]:
    return [(e.set.name, e.name) for e in App.from_config(config).schedule(FixedUpdate).systems()]


def test_moving_modbus_server_above_the_drivers_runs_the_same_tick(tmp_path: Path) -> None:
    demo = _demo_text()
    start = demo.index("# World fields for a SCADA")
    served = demo[start:]
    moved = demo[:start].replace("# Field devices.", served + "\n# Field devices.", 1)
    assert moved.index("modbus_server:") < moved.index("\nmodbus:")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Each its own state dir: the simulated GPIO chip's lines are one process's each.
    shipped_dir = "state_dir: /tmp/edgeloop-demo/state"
    assert shipped_dir in demo
    as_shipped = _load(tmp_path / "a", demo.replace(shipped_dir, f"state_dir: {tmp_path}/a"))
    reordered = _load(tmp_path / "b", moved.replace(shipped_dir, f"state_dir: {tmp_path}/b"))
    assert list(reordered.sections) != list(as_shipped.sections)
    order = _fixed_update(as_shipped)
    assert _fixed_update(reordered) == order
    sets = [name for name, _ in order]
    assert sets.index("FieldInput") < sets.index("NetworkReceive")
    assert (
        sets.index("NetworkReceive") < sets.index("ModbusServerInput") < sets.index("SensorInput")
    )

    hashes = []
    for config in (as_shipped, reordered):
        app = App.from_config(config)
        app.run_for(20)
        hashes.append(app.world.state_hash())
        app.shutdown()
    assert hashes[0] == hashes[1]


def test_input_sets_run_in_the_declared_order_whichever_a_plugin_configures_first() -> None:
    app = App()
    app.configure_sets(FixedUpdate, IoReceive, ModbusServerInput, SensorInput)
    app.configure_sets(FixedUpdate, IoReceive, NetworkReceive, SensorInput)
    app.configure_sets(FixedUpdate, IoReceive, FieldInput, SensorInput)
    order = app.schedule(FixedUpdate).order()
    assert order[:5] == [IoReceive, FieldInput, NetworkReceive, ModbusServerInput, SensorInput]


def test_a_field_carries_the_unit_its_config_gives() -> None:
    claims = [
        Claim("tank1.TankLevel.level_m", "read", "modbus_server points[0]", "read", (), unit="m"),
        Claim("tank1.TankLevel.level_m", "write", "simulate_tanks", "simulated sensor", ()),
        Claim("a.B.c", "write", "w", "system", ()),
    ]
    units = {f.field: f.unit for f in table(claims, lambda at: "")}
    assert units == {"a.B.c": "", "tank1.TankLevel.level_m": "m"}
