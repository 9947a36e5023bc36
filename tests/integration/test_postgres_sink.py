"""The PostgreSQL sink against a real PostgreSQL (a throwaway cluster of the test's):
rows arrive by COPY, and a database restarted in the middle of a stream loses none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edgeloop.uplink.postgres_config import PostgresConfig
from edgeloop.uplink.postgres_sink import PostgresSink
from tests.pg_cluster import Postgres
from tests.sparkplug_host import NodeContext, until

LEVEL = "tank1.TankLevel.level_m"


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    with Postgres(tmp_path / "pg") as cluster:
        yield cluster


def sink(cluster: Postgres, state_dir: Path, **changes: Any) -> tuple[PostgresSink, NodeContext]:
    context = NodeContext(state_dir)
    said = {"conninfo": cluster.conninfo, "flush_interval_s": 0.05, "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2, "connect_timeout_s": 2, **changes}  # fmt: skip
    return PostgresSink(PostgresConfig.model_validate(said), context), context  # type: ignore[arg-type]


def rows(cluster: Postgres, table: str = "edgeloop_samples") -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(cluster.conninfo) as db:
            query = f"SELECT time, appliance, field, value FROM {table} ORDER BY time, field"
            return db.execute(query).fetchall()  # type: ignore[arg-type]
    except psycopg.Error:
        return []  # not there yet, or the database is restarting


async def test_the_changes_arrive_as_rows(postgres: Postgres, tmp_path: Path) -> None:
    sink_, context = sink(postgres, tmp_path / "state", fields=["tank1.*"])
    await sink_.start()
    base = time.time_ns() // 1000
    context.feed({LEVEL: 0.5, "tank1.Pid.setpoint": 1.2, "room1.Climate.humidity": 40.0},
                 t_us=base)  # fmt: skip
    context.feed({LEVEL: 0.75, "tank1.Tank.pump_on": True}, t_us=base + 10_000)
    context.feed({LEVEL: None}, t_us=base + 20_000)
    await until(lambda: len(rows(postgres)) == 5, "the rows")
    await sink_.stop()
    got = [(t.timestamp(), a, f, v) for t, a, f, v in rows(postgres)]
    start = base / 1e6
    assert got == [
        (pytest.approx(start), "test-appliance", "tank1.Pid.setpoint", 1.2),
        (pytest.approx(start), "test-appliance", LEVEL, 0.5),
        (pytest.approx(start + 0.01), "test-appliance", "tank1.Tank.pump_on", 1.0),
        (pytest.approx(start + 0.01), "test-appliance", LEVEL, 0.75),
        (pytest.approx(start + 0.02), "test-appliance", LEVEL, None),
    ], "room1 is not in fields; a boolean is 1.0; no value is NULL"
    assert sink_.commits >= 1
    # Debian 12 has no TimescaleDB package (docs/uplinks.md): the plain table's path,
    # with its index on (field, time)
    with psycopg.connect(postgres.conninfo) as db:
        indexes = db.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'edgeloop_samples'"
        ).fetchall()
        extension = db.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        assert extension.fetchone() is None
    assert [d for (d,) in indexes if d.endswith('(field, "time")')], indexes


async def test_a_database_restart_mid_stream_loses_no_row(
    postgres: Postgres, tmp_path: Path
) -> None:
    sink_, context = sink(postgres, tmp_path / "state")
    await sink_.start()
    base = time.time_ns() // 1000
    sent: list[float] = []

    async def stream() -> None:
        for value in range(1, 1_000_000):
            context.feed({LEVEL: float(value)}, t_us=base + 1000 * value)
            sent.append(float(value))
            await asyncio.sleep(0.002)

    streaming = asyncio.create_task(stream())
    await until(lambda: len(rows(postgres)) > 50, "rows arriving")
    await asyncio.to_thread(postgres.stop)
    away = len(sent)
    await until(lambda: len(sent) > away + 200, "changes while the database is away")
    assert sink_.backlog is not None
    await until(lambda: sink_.backlog is not None and sink_.backlog.count > 0, "the backlog")
    await asyncio.to_thread(postgres.start)
    streaming.cancel()
    await until(lambda: len({r[3] for r in rows(postgres)}) == len(sent), "every row", 60)
    await sink_.stop()
    values = [r[3] for r in rows(postgres)]
    assert list(dict.fromkeys(values)) == sent, "every change, in time order"
    assert sink_.dropped == 0


async def test_rows_waiting_when_the_appliance_restarts_are_written_after(
    postgres: Postgres, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    await asyncio.to_thread(postgres.stop)
    first, context = sink(postgres, state)
    await first.start()
    base = time.time_ns() // 1000
    for value in range(1, 11):
        context.feed({LEVEL: float(value)}, t_us=base + 1000 * value)
    await first.stop()
    second, context = sink(postgres, state)
    context.feed({"tank1.Pid.setpoint": 1.5}, t_us=base + 20_000)  # numbered anew
    await second.start()
    await asyncio.to_thread(postgres.start)
    await until(lambda: len(rows(postgres)) == 11, "the 11 rows")
    await second.stop()
    assert [(f, v) for _, _, f, v in rows(postgres)] == [
        *((LEVEL, float(v)) for v in range(1, 11)),
        ("tank1.Pid.setpoint", 1.5),
    ]
