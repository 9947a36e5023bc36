"""Shared fixtures: small component types used across the kernel tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgeloop import Component

REPO = Path(__file__).resolve().parent.parent


class Position(Component):
    x: float = 0.0
    y: float = 0.0


class Velocity(Component):
    dx: float = 0.0
    dy: float = 0.0


class Frozen(Component):
    pass


def output_of_another_process(code: str) -> str:
    """What ``code`` prints in a fresh interpreter with its own string-hash seed."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    return result.stdout.strip()
