"""What every benchmark here shares: the machine it ran on, and how results go out.

Each bench prints a readable table; its figures go as JSON to ``--json OUT``, or after
the table when no file is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_description() -> str:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() in ("model name", "Model") and value.strip():
                model = value.strip()
                break
    arch = platform.machine() if model is None else f"{platform.machine()} {model}"
    return f"{arch}, {os.cpu_count()} cores, Linux {platform.release()}"


def emit(table: str, result: dict[str, Any], json_path: Path | None) -> None:
    print(table)
    text = json.dumps(result, indent=2)
    if json_path is None:
        print()
        print(text)
    else:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
