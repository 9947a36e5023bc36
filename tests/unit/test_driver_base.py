"""The driver base: a link's lifecycle, its stop, its retries, and the fault log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgeloop.drivers.base import RECANCEL_S, FaultLog, Link
from edgeloop.drivers.health import Backoff

log = logging.getLogger("tests.driver_base")


class SwallowingLink(Link):
    """A session that loses one cancel, as Python 3.11's wait_for does when the cancel
    meets a wait that is just completing, and loops on."""

    def __init__(self) -> None:
        super().__init__("swallowing", [], Backoff(0.01, 0.01), FaultLog(log, 60.0))
        self.waiting = asyncio.Event()
        self.swallowed = 0

    async def session(self) -> str | None:
        while True:
            self.waiting.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1


class FailingLink(Link):
    """Sessions that fail ``failures`` times (the first ``surprises`` with an
    exception), then one that waits to be stopped."""

    def __init__(self, failures: int, surprises: int = 0) -> None:
        super().__init__("failing", [], Backoff(0.001, 0.001, jitter=0), FaultLog(log, 60.0))
        self.left = failures
        self.surprises = surprises
        self.serving = asyncio.Event()

    async def session(self) -> str | None:
        if self.surprises:
            self.surprises -= 1
            raise RuntimeError("a library's surprise")
        if self.left:
            self.left -= 1
            return "cannot open: no such device"
        self.serving.set()
        await asyncio.sleep(3600)
        return None


async def test_stop_ends_a_link_whose_session_swallowed_the_cancel() -> None:
    link = SwallowingLink()
    link.start()
    await asyncio.wait_for(link.waiting.wait(), 5)
    async with asyncio.timeout(RECANCEL_S * 5):
        await link.stop()
    assert link.swallowed == 1
    assert not link.running


async def test_a_failed_session_is_retried_after_its_backoff() -> None:
    link = FailingLink(failures=3)
    link.start()
    await asyncio.wait_for(link.serving.wait(), 5)
    await link.stop()
    assert (link.sessions, link.failures) == (4, 3)
    assert link.backoff.attempts == 3


async def test_a_surprise_exception_does_not_end_the_link(caplog: pytest.LogCaptureFixture) -> None:
    link = FailingLink(failures=0, surprises=2)
    link.start()
    await asyncio.wait_for(link.serving.wait(), 5)
    await link.stop()
    assert link.sessions == 3
    assert caplog.text.count("failing: unexpected error") == 2


def test_the_fault_log_logs_a_kind_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    faults = FaultLog(log, 60.0)
    caplog.set_level(logging.INFO, logger=log.name)
    for _ in range(3):
        faults.log("down", "%s down", "a")
        faults.log("open", "%s open", "a", level=logging.INFO)
    assert [r.getMessage() for r in caplog.records] == ["a down", "a open"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
