"""edgeloop.config: one YAML file plus conf.d fragments, every problem with its line."""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from edgeloop.config import (
    Config,
    ConfigError,
    ConfigSection,
    Problem,
    RuntimeConfig,
    Section,
    config_digest,
    installed_sections,
    load_config,
)
from tests.conftest import REPO, output_of_another_process


class Stage(Section):
    gain: float
    limit: Annotated[float, Field(ge=0)] = 1.0


class PumpConfig(Section):
    setpoint: Annotated[float, Field(gt=0, le=10)]
    stages: tuple[Stage, ...] = ()


class ValveConfig(Section):
    open_s: float = 2.0


class _NoPlugin:
    def __init__(self, model: Any) -> None:
        self.model = model

    def build(self, app: Any) -> None: ...


SECTIONS = [
    ConfigSection("pump", PumpConfig, _NoPlugin),
    ConfigSection("valve", ValveConfig, _NoPlugin),
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path) -> Config:
    return load_config(path, SECTIONS)


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.problems


def where(problem: Problem) -> tuple[str, int, int]:
    return (problem.file.name, problem.line, problem.column)


def test_valid_file_loads_with_defaults_and_sections_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "valve: {}\npump:\n  setpoint: 5\n")

    config = load(path)

    assert config.path == path
    assert config.runtime == RuntimeConfig()
    assert config.runtime.rate_hz == 100.0
    assert list(config.sections) == ["valve", "pump"]
    assert config.sections["pump"] == PumpConfig(setpoint=5)
    assert config.warnings == []


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path / "config.yaml", ""))

    assert config.runtime == RuntimeConfig(name="edgeloop", rate_hz=100.0, on_system_error="stop")
    assert config.sections == {}


def test_empty_section_enables_it_with_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path / "config.yaml", "runtime:\nvalve:\n"))

    assert config.sections == {"valve": ValveConfig()}


def test_every_problem_is_listed_in_one_run_sorted_by_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        "runtime:\n  rate_hz: 0\npump:\n  setpoint: 5\n  stagez: []\nvalve:\n  open_s: soon\n",
    )

    problems = problems_of(path)

    assert [where(p) for p in problems] == [
        ("config.yaml", 2, 12),
        ("config.yaml", 5, 3),
        ("config.yaml", 7, 11),
    ]
    assert [str(p) for p in problems] == [
        f"{path}:2:12: runtime.rate_hz: 0 must be greater than 0",
        f"{path}:5:3: pump.stagez: unknown key 'stagez' (did you mean 'stages'?)",
        f'{path}:7:11: valve.open_s: "soon" must be a valid number,'
        " unable to parse string as a number",
    ]


def test_config_error_text_is_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  rate_hz: -1\n  name: ''\n")

    with pytest.raises(ConfigError) as caught:
        load(path)

    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert len(caught.value.problems) == 2


def test_unknown_section_suggests_the_closest_name(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime: {}\npumpp:\n  setpoint: 1\n")

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 2, 1)
    assert problem.message == "pumpp: unknown section 'pumpp' (did you mean 'pump'?)"


def test_unknown_section_without_a_close_name_lists_the_known_ones(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path / "config.yaml", "modbus: {}\n"))

    assert problem.message == (
        "modbus: unknown section 'modbus'"
        " (no installed plugin provides it; known sections: include, pump, runtime, valve)"
    )


def test_unknown_key_in_a_list_item_reports_its_line_and_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        "pump:\n  setpoint: 5\n  stages:\n    - gain: 1\n    - gain: 2\n      limt: 3\n",
    )

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 6, 7)
    assert problem.message == "pump.stages[1].limt: unknown key 'limt' (did you mean 'limit'?)"


def test_out_of_bounds_value_in_a_list_item_points_at_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml", "pump:\n  setpoint: 5\n  stages:\n    - {gain: 1, limit: -2}\n"
    )

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 4, 24)
    assert problem.message == "pump.stages[0].limit: -2 must be greater than or equal to 0"


def test_wrong_type_names_the_value_and_the_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  on_system_error: halt\n")

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 2, 20)
    assert problem.message == "runtime.on_system_error: \"halt\" must be 'stop' or 'skip'"


def test_missing_required_key_points_at_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "pump:\n  setpoint: 5\n  stages:\n    - limit: 2\n")

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 4, 7)
    assert problem.message == "pump.stages[0]: missing required key 'gain'"


def test_yaml_yes_is_not_taken_for_a_rate(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path / "config.yaml", "runtime:\n  rate_hz: yes\n"))

    assert problem.message == "runtime.rate_hz: true must be a valid number"


def test_unknown_key_without_a_close_name_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "valve:\n  duration: 3\n")

    (problem,) = problems_of(path)

    assert problem.message == "valve.duration: unknown key 'duration' (expected one of: open_s)"


def test_duplicate_key_is_an_error_naming_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  rate_hz: 50\n  name: a\n  rate_hz: 60\n")

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 4, 3)
    assert problem.message == "runtime.rate_hz: duplicate key (first set on line 2); keep one"


def test_yaml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  rate_hz: 50\n  name: [unclosed\n")

    (problem,) = problems_of(path)

    assert problem.file == path
    assert problem.line == 4
    assert problem.message.startswith("invalid YAML:")


def test_unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  name: !!python/name:os.system x\n")

    (problem,) = problems_of(path)

    assert where(problem) == ("config.yaml", 2, 9)
    assert "YAML tag 'tag:yaml.org,2002:python/name:os.system'" in problem.message


def test_top_level_list_is_refused(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path / "config.yaml", "- runtime\n"))

    assert where(problem) == ("config.yaml", 1, 1)
    assert "must map section names to settings" in problem.message


def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "absent.yaml")

    assert where(problem) == ("absent.yaml", 1, 1)
    assert problem.message == "cannot read config file: No such file or directory"


def test_include_merges_mappings_and_concatenates_lists(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        "include: conf.d/*.yaml\nruntime:\n  name: line3\npump:\n  stages:\n    - gain: 1\n",
    )
    write(tmp_path / "conf.d" / "10-rate.yaml", "runtime:\n  rate_hz: 50\n")
    write(tmp_path / "conf.d" / "20-pump.yaml", "pump:\n  setpoint: 4\n  stages:\n    - gain: 2\n")
    write(tmp_path / "conf.d" / "30-valve.yaml", "valve:\n  open_s: 1\n")

    config = load(path)

    assert config.runtime == RuntimeConfig(name="line3", rate_hz=50)
    assert config.sections["pump"] == PumpConfig(setpoint=4, stages=(Stage(gain=1), Stage(gain=2)))
    assert list(config.sections) == ["pump", "valve"]


def test_include_accepts_a_list_of_patterns(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "include:\n  - a.yaml\n  - b/*.yaml\n")
    write(tmp_path / "a.yaml", "runtime: {rate_hz: 10}\n")
    write(tmp_path / "b" / "valve.yaml", "valve: {open_s: 3}\n")

    config = load(path)

    assert config.runtime.rate_hz == 10
    assert config.sections == {"valve": ValveConfig(open_s=3)}


def test_scalar_set_in_two_files_is_an_error_naming_both_places(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "include: conf.d/*.yaml\nruntime:\n  rate_hz: 20\n")
    fragment = write(tmp_path / "conf.d" / "rate.yaml", "runtime:\n  rate_hz: 50\n")

    (problem,) = problems_of(path)

    assert (problem.file, problem.line, problem.column) == (fragment, 2, 3)
    assert problem.message == f"runtime.rate_hz: also set at {path}:3:3; keep one of them"


def test_problem_inside_a_fragment_points_at_the_fragment(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "include: conf.d/*.yaml\npump:\n  stages: []\n")
    write(tmp_path / "conf.d" / "a.yaml", "valve: {}\n")
    fragment = write(
        tmp_path / "conf.d" / "b.yaml",
        "pump:\n  setpoint: 3\n  stages:\n    - gain: 1\n    - gian: 2\n",
    )

    problems = problems_of(path)

    assert [(p.file, p.line, p.column) for p in problems] == [(fragment, 5, 7), (fragment, 5, 7)]
    assert {p.message for p in problems} == {
        "pump.stages[1]: missing required key 'gain'",
        "pump.stages[1].gian: unknown key 'gian' (did you mean 'gain'?)",
    }


def test_include_pattern_matching_nothing_is_only_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime: {}\ninclude:\n  - conf.d/*.yaml\n")

    config = load(path)

    (warning,) = config.warnings
    assert where(warning) == ("config.yaml", 3, 5)
    assert warning.severity == "warning"
    assert str(warning).startswith(f"{path}:3:5: warning: include: 'conf.d/*.yaml' matches no file")


def test_include_inside_a_fragment_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "include: conf.d/*.yaml\n")
    fragment = write(tmp_path / "conf.d" / "a.yaml", "valve: {}\ninclude: more/*.yaml\n")

    (problem,) = problems_of(path)

    assert (problem.file, problem.line, problem.column) == (fragment, 2, 1)
    assert "only the main config file may include others" in problem.message


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    loads: object

    def load(self) -> object:
        if isinstance(self.loads, Exception):
            raise self.loads
        return self.loads


def test_broken_or_foreign_entry_points_are_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entries = [
        FakeEntryPoint("valve", "acme.valve:SECTION", SECTIONS[1]),
        FakeEntryPoint("gone", "acme.gone:SECTION", ModuleNotFoundError("No module named 'acme'")),
        FakeEntryPoint("odd", "acme.odd:SECTION", PumpConfig),
        FakeEntryPoint("pump", "acme.pump:SECTION", SECTIONS[0]),
    ]
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: entries if group == "edgeloop.plugins" else [],
    )

    with caplog.at_level(logging.WARNING, logger="edgeloop.config"):
        sections = installed_sections()

    assert sections == SECTIONS
    assert "skipping plugin 'gone': cannot load acme.gone:SECTION" in caplog.text
    assert "skipping plugin 'odd': acme.odd:SECTION is not a ConfigSection" in caplog.text


def test_installed_sections_returns_config_sections_sorted_by_name() -> None:
    sections = installed_sections()

    assert all(isinstance(section, ConfigSection) for section in sections)
    assert [s.name for s in sections] == sorted(s.name for s in sections)


def test_only_the_plugins_a_config_names_are_imported(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", "runtime: {name: x}\nmodbus_server:\n  points: []\n")
    code = (
        "import sys\n"
        "from edgeloop.config import ConfigError, load_config\n"
        "try:\n"
        f"    load_config({str(config)!r})\n"
        "except ConfigError as error:\n"
        "    print(error.problems[0].message)\n"
        "wanted = {'can', 'cantools', 'edgeloop.drivers.can.io',\n"
        "          'edgeloop.drivers.serial.io'}\n"
        "print(sorted(wanted & set(sys.modules)))\n"
        "print('pymodbus' in sys.modules)\n"
    )
    problem, bus_libraries, pymodbus = output_of_another_process(code).splitlines()
    assert "points" in problem, "the section named was validated"
    assert bus_libraries == "[]", "no other driver's bus library was imported"
    assert pymodbus == "True"


def test_the_digest_follows_what_a_config_says_not_how_it_is_written(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("runtime: {name: line3, rate_hz: 50}\ntank_plant:\n  tanks: [{name: t1}]\n")
    styled = tmp_path / "styled.yaml"
    styled.write_text(
        "# line 3 filler\ntank_plant:\n  tanks:\n    - name: t1  # the only one\n"
        "runtime:\n  rate_hz: 50\n  name: line3\n"
    )
    edited = tmp_path / "edited.yaml"
    edited.write_text("runtime: {name: line3, rate_hz: 50}\ntank_plant:\n  tanks: [{name: t2}]\n")
    digests = [config_digest(load_config(p)) for p in (plain, styled, edited)]
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_has_a_digest(path: Path) -> None:
    assert len(config_digest(load_config(path))) == 16


def test_drivers_alone_needs_a_network_worker_beside_them(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "runtime:\n  name: x\n  io_drivers_alone: true\n")
    (problem,) = problems_of(path)
    assert "io_drivers_alone needs io_workers of 2 or more" in problem.message
    assert where(problem)[:2] == ("config.yaml", 3)

    path.write_text("runtime:\n  io_workers: 2\n  io_drivers_alone: true\n")
    assert list(load(path).runtime.network_workers) == [1]
