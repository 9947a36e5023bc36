"""The ``postgres`` section: the data log's change feed into PostgreSQL/TimescaleDB,
written by the io process (``postgres_sink``). The control side only makes sure the
feed runs; what it carries is what the ``data_log`` section (and any other uplink)
collects."""

from __future__ import annotations

from edgeloop.app import App
from edgeloop.config import ConfigSection
from edgeloop.data.collect import add_change_feed
from edgeloop.realtime.io_part import IoContext, IoPart
from edgeloop.uplink.postgres_config import PostgresConfig


class PostgresPlugin:
    def __init__(self, config: PostgresConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_change_feed(app)


def sink(config: PostgresConfig, context: IoContext) -> IoPart:
    """The io part, imported only when configured: psycopg would otherwise add ~0.2 s
    to the start of every edgeloop process."""
    from edgeloop.uplink.postgres_sink import PostgresSink  # noqa: PLC0415

    return PostgresSink(config, context)


SECTION = ConfigSection("postgres", PostgresConfig, PostgresPlugin, io=sink)
