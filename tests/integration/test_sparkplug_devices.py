"""What the edge node says of its devices, against a real Mosquitto: each metric's
quality (the World's GOOD/STALE/BAD) as its ``Quality`` property, and a device's
DDEATH and DBIRTH following its health (the control side's ``sparkplug.devices``).
The end-to-end path, with a real PLC simulator stopped and started, is in
test_sparkplug_demo.py."""

from __future__ import annotations

from pathlib import Path

from edgeloop.drivers.points import Quality
from edgeloop.uplink.sparkplug_node import SparkplugNode
from edgeloop.uplink.sparkplug_records import TOPIC_DEVICES
from tests.integration.test_sparkplug import LEVEL, LEVEL_FIELD, START, config
from tests.mqtt_broker import Mosquitto
from tests.sparkplug_host import Host, NodeContext, metric_named, quality_of, until

LEVEL_QUALITY = f"{LEVEL_FIELD}_quality"


def _qualities(host: Host, alias: int) -> list[tuple[float, int | None]]:
    """(value, Quality) of every data value of ``alias``, in order."""
    return [
        (metric.double_value, quality_of(metric))
        for message in host.of("DDATA")
        for metric in message.payload.metrics
        if metric.alias == alias
    ]


async def test_each_metric_carries_its_fields_quality_in_births_and_data(
    tmp_path: Path,
) -> None:
    """Ignition's Quality property (Int32: 192 good, 500 stale, 0 bad): in the DBIRTH
    as the field has it; a quality change alone is a DDATA with the value it goes with;
    a field without a quality carries no property."""
    with Mosquitto(tmp_path / "broker") as broker:
        async with Host(broker.port) as host:
            context = NodeContext(tmp_path / "state")
            node = SparkplugNode(config(broker.port), context)  # type: ignore[arg-type]
            context.feed({**START, LEVEL_QUALITY: Quality.GOOD})
            await node.start()
            try:
                await until(lambda: node.live, "the node publishing live")
                (dbirth,) = host.of("DBIRTH")
                level = metric_named(dbirth.payload, "level")
                assert (level.double_value, quality_of(level)) == (0.5, 192)
                assert quality_of(metric_named(dbirth.payload, "setpoint")) is None
                context.feed({LEVEL_QUALITY: Quality.STALE})
                await until(lambda: _qualities(host, LEVEL) == [(0.5, 500)], "stale")
                context.feed({LEVEL_FIELD: 0.25, LEVEL_QUALITY: Quality.BAD})
                await until(lambda: len(_qualities(host, LEVEL)) == 2, "bad")
                context.feed({LEVEL_QUALITY: Quality.BAD})  # no change: nothing sent
                context.feed({LEVEL_FIELD: 0.3, LEVEL_QUALITY: Quality.GOOD})
                await until(lambda: len(_qualities(host, LEVEL)) == 3, "good again")
            finally:
                await node.stop()
    assert _qualities(host, LEVEL) == [(0.5, 500), (0.25, 0), (0.3, 192)]


async def test_a_device_gone_offline_gets_a_ddeath_and_back_a_dbirth_before_its_data(
    tmp_path: Path,
) -> None:
    """[tck-id-operational-behavior-device-ddeath] and [tck-id-payloads-ddeath-seq]:
    a device whose health goes offline gets a DDEATH (a seq, no metrics) and no data
    while dead; back, a DBIRTH with its current values, then its data."""
    devices = [
        {"id": "tank1", "health": "plc1", "metrics": [{"name": "level", "field": LEVEL_FIELD}]}
    ]
    with Mosquitto(tmp_path / "broker") as broker:
        async with Host(broker.port) as host:
            context = NodeContext(tmp_path / "state")
            chosen = config(broker.port, devices=devices)
            node = SparkplugNode(chosen, context)  # type: ignore[arg-type]
            context.feed({"loop.Stats.ticks": 0, LEVEL_FIELD: 0.5})
            await node.start()
            try:
                await until(lambda: node.live and host.of("DBIRTH"), "the births")
                context.tell(TOPIC_DEVICES, [False])
                await until(lambda: host.of("DDEATH"), "the DDEATH")
                context.feed({LEVEL_FIELD: 0.6})  # while dead: no DDATA
                context.feed({"loop.Stats.ticks": 1})
                await until(lambda: host.of("NDATA"), "the node's data, after the device's")
                context.tell(TOPIC_DEVICES, [True])
                await until(lambda: len(host.of("DBIRTH")) == 2, "the DBIRTH again")
                context.feed({LEVEL_FIELD: 0.7})
                await until(lambda: host.of("DDATA"), "its data")
            finally:
                await node.stop()
    lives = [(r.verb, r.payload) for r in host.of("DBIRTH", "DDEATH", "DDATA", "NDATA")]
    assert [verb for verb, _ in lives] == ["DBIRTH", "DDEATH", "NDATA", "DBIRTH", "DDATA"]
    death, reborn = lives[1][1], lives[3][1]
    assert (len(death.metrics), death.seq) == (0, 2), "after NBIRTH 0 and DBIRTH 1"
    assert metric_named(reborn, "level").double_value == 0.6, "its current value"
    assert [m.double_value for m in lives[4][1].metrics] == [0.7]
