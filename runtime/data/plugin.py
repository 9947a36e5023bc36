"""The ``data_log`` section: changed fields collected by the control process
(``collect``), written to SQLite by the io process (``logger``). See docs/data.md."""

from __future__ import annotations

import logging

from edgeloop.app import App
from edgeloop.config import ConfigSection
from edgeloop.data.collect import DataCollector, add_change_feed
from edgeloop.data.config import DataLogConfig
from edgeloop.data.logger import DataLogger
from edgeloop.schedule import Shutdown
from edgeloop.world import World

log = logging.getLogger("edgeloop.data")


class DataLogPlugin:
    def __init__(self, config: DataLogConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_change_feed(app).config = self.config
        app.add_systems(Shutdown, report_totals)


def report_totals(world: World) -> None:
    collector = world.resource(DataCollector)
    log.info(
        "data log: %d samples in %d batches handed to the io process",
        collector.samples,
        collector.batches,
    )


SECTION = ConfigSection("data_log", DataLogConfig, DataLogPlugin, io=DataLogger)
