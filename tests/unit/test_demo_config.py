"""`edgeloop demo --port-base N --run-dir DIR`: every port and path of the demo moves,
and without them the demo keeps config/demo.yaml's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloop.config import KeyPath, load_config
from edgeloop.demo_config import (
    CAN_GROUP,
    PORT_COUNT,
    can_group,
    demo_ports,
    place_demo_config,
)
from tests.conftest import REPO

DEMO = REPO / "config" / "demo.yaml"
BASE = 21_000


def leaves(data: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, (*path, index))
    else:
        yield path, data


def placed(tmp_path: Path, port_base: int | None) -> dict[KeyPath, Any]:
    path = place_demo_config(DEMO, tmp_path / "run", port_base)
    assert path == tmp_path / "run" / "config.yaml"
    load_config(path)  # valid, or ConfigError naming the line
    return dict(leaves(yaml.safe_load(path.read_text())))


def test_port_base_moves_every_port_of_the_demo(tmp_path: Path) -> None:
    moved = placed(tmp_path, BASE)
    ports = {value for path, value in moved.items() if path[-1] == "port" and path[0] != "serial"}
    assert ports == set(range(BASE, BASE + PORT_COUNT))
    assert moved[CAN_GROUP] == can_group(BASE) != dict(placed(tmp_path, None))[CAN_GROUP]


def test_run_dir_holds_every_path_of_the_demo(tmp_path: Path) -> None:
    paths = [v for v in placed(tmp_path, BASE).values() if isinstance(v, str) and "/" in v]
    assert paths, "the demo has a serial device path"
    assert all(Path(path).parent == tmp_path / "run" for path in paths), paths


def test_without_port_base_the_demo_keeps_its_own_ports(tmp_path: Path) -> None:
    own = dict(leaves(yaml.safe_load(DEMO.read_text())))
    kept = placed(tmp_path, None)
    changed = {path for path in own if own[path] != kept[path]}
    assert changed == {("serial", "devices", 0, "port"), ("runtime", "state_dir")}  # paths
    assert demo_ports(DEMO) == [7700, 8080, 5020, 5502, 47111]


def test_two_port_bases_never_share_a_can_group() -> None:
    groups = {can_group(base) for base in range(1024, 65_536 - PORT_COUNT)}
    assert len(groups) == 65_536 - PORT_COUNT - 1024


def test_a_config_without_a_port_the_demo_moves_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    del data["modbus_server"]
    source = tmp_path / "demo.yaml"
    source.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"modbus_server\.port: not found"):
        place_demo_config(source, tmp_path / "run", BASE)
