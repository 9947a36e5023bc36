"""Waiting in the harnesses: tick the App until a condition holds, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

H = TypeVar("H")
T = TypeVar("T")


async def tick_until(
    harness: H,
    condition: Callable[[H], T],
    tick: Callable[[], Awaitable[None]],
    timeout_s: float,
    what: str = "",
) -> T:
    """``tick()`` until ``condition(harness)`` is truthy; its value, or AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition(harness)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or condition}")
        await tick()
