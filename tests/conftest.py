"""Shared fixtures: small component types used across the kernel tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop import App, Component

REPO = Path(__file__).resolve().parent.parent


class Position(Component):
    x: float = 0.0
    y: float = 0.0


class Velocity(Component):
    dx: float = 0.0
    dy: float = 0.0


class Frozen(Component):
    pass


@pytest.fixture
def app() -> App:
    return App(rate_hz=100)
