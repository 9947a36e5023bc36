"""The README's examples are code: they must run as shown."""

from __future__ import annotations

import re
from pathlib import Path

from edgeloop.config import load_config
from edgeloop.demo_config import demo_ports
from tests.conftest import REPO


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
    # The last example ends with app.run_for(ticks=1000).
    assert namespace["app"].time.tick == 1000  # type: ignore[attr-defined]


def test_readme_config_examples_are_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.yaml"
        path.write_text(block)
        load_config(path)  # ConfigError, naming the line, if an example went stale


def test_readme_names_the_demo_ports_that_port_base_moves() -> None:
    text = " ".join((REPO / "README.md").read_text().split())
    ports = demo_ports(REPO / "config" / "demo.yaml")
    said = f"instead of {', '.join(map(str, ports[:-1]))} and {ports[-1]}"
    assert said in text
