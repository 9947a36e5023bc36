"""Where ``edgeloop demo`` runs: config/demo.yaml moved onto chosen ports and a run dir.

The demo's config says fixed ports (7700, 8080, ...) and paths under /tmp/edgeloop-demo.
A second demo on the same machine (two test runs, two developers) must never meet the
first, so ``--port-base N`` moves every port the demo uses to N, N+1, ... (and its CAN
multicast group to one made from N), and ``--run-dir DIR`` moves every path there. The
overrides are applied to the parsed config by key path, and the result is written to
DIR/config.yaml: the supervisor, its children (a restarted io process too) and the
simulators all read that one file, so one file says where everything is.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import yaml

from edgeloop.config import KeyPath

DEFAULT_RUN_DIR = Path("/tmp/edgeloop-demo")
CONFIG_NAME = "config.yaml"
SPARKPLUG_FILE = "demo-sparkplug.yaml"  # the section --sparkplug HOST:PORT adds
# Each port of config/demo.yaml, by key path, and its offset from --port-base.
PORTS: dict[KeyPath, int] = {
    ("network", "tcp", "port"): 0,
    ("network", "websocket", "port"): 1,
    ("modbus", "lines", 0, "tcp", "port"): 2,
    ("modbus_server", "port"): 3,
    ("can", "bus", "options", "port"): 4,
}
PORT_COUNT = len(PORTS)
LOWEST_PORT_BASE = 1024  # below: ports only root may bind
HIGHEST_PORT_BASE = 65_536 - PORT_COUNT
CAN_GROUP: KeyPath = ("can", "bus", "channel")
SERIAL_DEVICES: KeyPath = ("serial", "devices")
STATE_DIR: KeyPath = ("runtime", "state_dir")
STATE_DIR_NAME = "state"
HEADER = (
    "# Written by `edgeloop demo` from {source}{ports}; rewritten at every start.\n"
    "# `edgeloop run -c {target}` runs the same appliance without the simulators.\n"
)


def can_group(port_base: int) -> str:
    """A multicast group of its own for the demo on ``port_base``: two demos whose CAN
    frames shared a group and port would each drive the other's motor."""
    return f"239.74.{port_base >> 8}.{port_base & 0xFF}"


def demo_ports(source: Path) -> list[int]:
    """The ports ``source`` says, in --port-base order."""
    data = yaml.safe_load(source.read_text())
    return [int(_at(data, path, source)) for path in sorted(PORTS, key=PORTS.__getitem__)]


def sparkplug_section(host: str, port: int) -> dict[str, Any]:
    """The demo's ``sparkplug`` section (config/demo-sparkplug.yaml) on ``host:port``."""
    with as_file(files("edgeloop.examples") / SPARKPLUG_FILE) as fragment:
        section: dict[str, Any] = yaml.safe_load(fragment.read_text())["sparkplug"]
    section["broker"] = {**section["broker"], "host": host, "port": port}
    return section


def place_demo_config(
    source: Path,
    run_dir: Path,
    port_base: int | None,
    *,
    sparkplug: tuple[str, int] | None = None,
) -> Path:
    """Write ``source`` (the demo config) moved to ``run_dir`` and, if given, the ports
    from ``port_base`` on and a Sparkplug edge node publishing to the broker at
    ``sparkplug`` (host, port), as run_dir/config.yaml; its path."""
    data = yaml.safe_load(source.read_text())
    if sparkplug is not None:
        data["sparkplug"] = sparkplug_section(*sparkplug)
    if port_base is not None:
        for path, offset in PORTS.items():
            _set(data, path, port_base + offset, source)
        _set(data, CAN_GROUP, can_group(port_base), source)
    for index, device in enumerate(_at(data, SERIAL_DEVICES, source)):
        _set(data, (*SERIAL_DEVICES, index, "port"), str(run_dir / device["name"]), source)
    _set(data, STATE_DIR, str(run_dir / STATE_DIR_NAME), source)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / CONFIG_NAME
    ports = "" if port_base is None else f" with --port-base {port_base}"
    header = HEADER.format(source=source, ports=ports, target=target)
    target.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return target


def _at(data: Any, path: KeyPath, source: Path) -> Any:
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            dotted = ".".join(map(str, path))
            raise ValueError(f"{source}: {dotted}: not found; the demo moves it") from None
    return data


def _set(data: Any, path: KeyPath, value: object, source: Path) -> None:
    _at(data, path, source)  # it is there: a moved key must not be added by mistake
    _at(data, path[:-1], source)[path[-1]] = value
