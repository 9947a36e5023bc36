"""A data log that cannot open its store says so and drops what comes, counted; the
rest of the io process goes on (its other parts are not its business)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from edgeloop.data.collect import TOPIC_BATCH
from edgeloop.data.config import DataLogConfig
from edgeloop.data.logger import DataLogger
from edgeloop.realtime.heartbeat import Heartbeats, IoSlot
from edgeloop.realtime.ipc import Record


class Context:
    """The part of the io process's IoContext the logger uses."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.heartbeats = Heartbeats()
        self.worker = 0
        self.handlers: dict[str, Callable[[Record], None]] = {}
        self.said: dict[str, str | None] = {}

    def on_topic(self, topic: str, handler: Callable[[Record], None]) -> None:
        self.handlers[topic] = handler

    def degraded(self, source: str, reason: str | None) -> None:
        self.said[source] = reason


def test_a_store_that_cannot_be_opened_degrades_and_drops_counted(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the state directory should be")
    context = Context(tmp_path / "not-a-dir")
    logger = DataLogger(DataLogConfig(), context)  # type: ignore[arg-type]
    asyncio.run(logger.start())
    assert logger.failed
    assert "not-a-dir" in (context.said["data_log"] or "")
    batch = [7, 1_800_000_000_000_000, [[1, "tank1.TankLevel.level_m"]], [1, 0.5, 1, 0.6]]
    context.handlers[TOPIC_BATCH](Record(TOPIC_BATCH, "7.0", 2, batch))
    assert logger.dropped == 2
    assert context.heartbeats.io(0, IoSlot.DATA_LOG_DROPPED) == 2, "for /metrics"
    asyncio.run(logger.stop())
    context.heartbeats.close()


def test_the_fields_declared_not_logged_are_skipped_not_counted(tmp_path: Path) -> None:
    context = Context(tmp_path)
    logger = DataLogger(DataLogConfig(flush_interval_s=0.05), context)  # type: ignore[arg-type]

    async def run() -> None:
        await logger.start()
        declared = [[1, "tank1.TankLevel.level_m", True], [2, "tank1.Pid.setpoint", False]]
        batch = [7, 1_800_000_000_000_000, declared, [1, 0.5, 2, 1.2]]
        context.handlers[TOPIC_BATCH](Record(TOPIC_BATCH, "7.0", 2, batch))
        await logger.stop()

    asyncio.run(run())
    assert (logger.rows_written, logger.dropped) == (1, 0)
    context.heartbeats.close()
