"""A demo of its own for each test: free ports and a run dir under the test's tmp_path,
so two tests (or two test runs, or a developer's `make demo`) never meet."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

from edgeloop.demo_config import PORT_COUNT, PORTS, place_demo_config
from edgeloop.sim.ports import free_port_run

WEBSOCKET = PORTS[("network", "websocket", "port")]


@dataclass(frozen=True, slots=True)
class DemoPlace:
    port_base: int
    run_dir: Path

    @property
    def options(self) -> list[str]:
        """`edgeloop demo` options that put the demo here."""
        return ["--port-base", str(self.port_base), "--run-dir", str(self.run_dir)]

    @property
    def dashboard(self) -> str:
        return f"ws://127.0.0.1:{self.port_base + WEBSOCKET}/ws"

    def config(self) -> Path:
        """The demo's config file placed here, for `edgeloop run -c`."""
        with as_file(files("edgeloop.examples") / "demo.yaml") as source:
            return place_demo_config(source, self.run_dir, self.port_base)


def demo_place(run_dir: Path) -> DemoPlace:
    return DemoPlace(free_port_run(PORT_COUNT), run_dir)
