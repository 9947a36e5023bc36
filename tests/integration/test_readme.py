"""The README's examples are code: they must run as shown."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
    # The last example ends with app.run_for(ticks=1000).
    assert namespace["app"].time.tick == 1000  # type: ignore[attr-defined]
