"""The Sparkplug B edge node against a real Mosquitto, with a host application of the
test's: the session's births and deaths, bdSeq and seq, aliases, Rebirth, the primary
host's STATE, and store-and-forward across broker and appliance restarts.

Statements of Sparkplug 3.0 are cited by their ids ([tck-id-...])."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.uplink.sparkplug_b_pb2 import Payload
from edgeloop.uplink.sparkplug_config import SparkplugConfig
from edgeloop.uplink.sparkplug_node import SparkplugNode
from edgeloop.uplink.sparkplug_records import TOPIC_WRITE
from tests.mqtt_broker import Mosquitto
from tests.sparkplug_host import GROUP, HOST_ID, NODE, Host, NodeContext, metric_named, until

TICKS, LEVEL, SETPOINT, PUMP = 1, 2, 3, 4  # the aliases: the metrics' order, from 1
LEVEL_FIELD = "tank1.Tank.level"


def config(port: int, **changes: Any) -> SparkplugConfig:
    said: dict[str, Any] = {
        "broker": {"port": port, "keepalive_s": 5},
        "group_id": GROUP,
        "edge_node_id": NODE,
        "primary_host_id": HOST_ID,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "metrics": [{"name": "Loop/ticks", "field": "loop.Stats.ticks", "type": "int64"}],
        "devices": [
            {
                "id": "tank1",
                "metrics": [
                    {"name": "level", "field": LEVEL_FIELD},
                    {
                        "name": "setpoint",
                        "field": "tank1.Pid.setpoint",
                        "writable": True,
                        "min": 0.0,
                        "max": 2.0,
                    },
                    {"name": "pump", "field": "tank1.Tank.pump_on", "type": "boolean"},
                ],
            }
        ],
        "backlog": {"flush_interval_s": 0.05},
    }
    said.update(changes)
    return SparkplugConfig.model_validate(said)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path / "broker") as mosquitto:
        yield mosquitto


class Running:
    def __init__(self, node: SparkplugNode, context: NodeContext) -> None:
        self.node = node
        self.context = context


START = {"loop.Stats.ticks": 0, LEVEL_FIELD: 0.5, "tank1.Pid.setpoint": 1.2,
         "tank1.Tank.pump_on": False}  # fmt: skip


async def start_node(
    port: int, state_dir: Path, *, level: float = 0.5, t_us: int | None = None
) -> Running:
    """An edge node, told every field's value first, as a (re)started io process is."""
    context = NodeContext(state_dir)
    node = SparkplugNode(config(port), context)  # type: ignore[arg-type]
    context.feed({**START, LEVEL_FIELD: level}, t_us=t_us)
    await node.start()
    return Running(node, context)


@pytest.fixture
async def running(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[tuple[Host, Running]]:
    async with Host(broker.port) as host:
        edge = await start_node(broker.port, tmp_path / "state")
        await until(lambda: edge.node.live, "the node publishing live")
        yield host, edge
        await edge.node.stop()


def bd_seq_of(payload: Payload) -> int:
    return metric_named(payload, "bdSeq").long_value


def latest(host: Host) -> tuple[Any, Any]:
    """The last Loop/ticks and level the host has."""
    ticks, level = host.data(TICKS), host.data(LEVEL)
    return (ticks[-1][1] if ticks else None, level[-1][1] if level else None)


def seqs(host: Host) -> list[int]:
    return [r.payload.seq for r in host.of("NBIRTH", "DBIRTH", "NDATA", "DDATA")]


async def test_the_births_say_every_metric_with_its_alias_and_value(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-topics-nbirth-topic], [tck-id-payloads-nbirth-seq] (0),
    [tck-id-payloads-nbirth-bdseq], [tck-id-operational-behavior-data-commands-rebirth-
    name], -datatype, -value (false), [tck-id-operational-behavior-data-publish-nbirth-
    values] and [tck-id-operational-behavior-data-publish-dbirth-values]: the births
    carry every metric's name, alias, datatype and current value."""
    host, _ = running
    await until(lambda: len(host.of("DBIRTH")) == 1, "the DBIRTH")
    nbirth, dbirth = host.of("NBIRTH", "DBIRTH")
    assert nbirth.topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
    assert dbirth.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/tank1"
    assert (nbirth.payload.seq, dbirth.payload.seq) == (0, 1)
    rebirth = metric_named(nbirth.payload, "Node Control/Rebirth")
    assert (rebirth.datatype, rebirth.boolean_value) == (11, False)
    ticks = metric_named(nbirth.payload, "Loop/ticks")
    assert (ticks.alias, ticks.datatype, ticks.long_value) == (TICKS, 4, 0)
    named = {m.name: m for m in dbirth.payload.metrics}
    assert (named["level"].alias, named["level"].datatype) == (LEVEL, 10)
    assert named["level"].double_value == 0.5
    assert named["setpoint"].double_value == 1.2
    assert (named["pump"].alias, named["pump"].datatype) == (PUMP, 11)
    assert named["pump"].boolean_value is False


async def test_data_carries_only_the_changed_metrics_by_alias(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-operational-behavior-data-publish-dbirth-change]: DDATA only for a change,
    with the alias and no name; a node metric's change is NDATA."""
    host, edge = running
    edge.context.feed({LEVEL_FIELD: 0.75})
    edge.context.feed({"loop.Stats.ticks": 100})
    await until(lambda: host.of("NDATA") and host.of("DDATA"), "NDATA and DDATA")
    (ddata,) = host.of("DDATA")
    assert ddata.topic == f"spBv1.0/{GROUP}/DDATA/{NODE}/tank1"
    assert [(m.alias, m.name, m.double_value) for m in ddata.payload.metrics] == [(LEVEL, "", 0.75)]
    (ndata,) = host.of("NDATA")
    assert [(m.alias, m.long_value) for m in ndata.payload.metrics] == [(TICKS, 100)]
    assert not any(m.is_historical for m in ddata.payload.metrics)


async def test_seq_counts_every_message_and_wraps_after_255(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-payloads-sequence-num-incrementing] and [tck-id-payloads-sequence-num-
    wrap]: seq goes up by one on every message, from 255 back to 0."""
    host, edge = running
    for value in range(1, 140):  # an NDATA and a DDATA each
        edge.context.feed({"loop.Stats.ticks": value, LEVEL_FIELD: float(value)})
        await until(lambda v=value: latest(host) == (v, v), f"the change to {value}")
    numbers = seqs(host)
    assert len(numbers) > 256
    assert numbers == [i % 256 for i in range(len(numbers))]


async def test_a_rebirth_ncmd_sends_the_births_again_with_the_same_bd_seq(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-operational-behavior-data-commands-rebirth-action-2] and -action-3: the
    whole birth sequence again, the NBIRTH with the bdSeq of the session's Will."""
    host, _ = running
    await until(lambda: len(host.of("DBIRTH")) == 1, "the first births")
    rebirth = Payload.Metric(name="Node Control/Rebirth", datatype=11, boolean_value=True)
    await host.command("NCMD", None, [rebirth])
    await until(lambda: len(host.of("DBIRTH")) == 2, "the births again")
    first, again = host.of("NBIRTH")
    assert bd_seq_of(again.payload) == bd_seq_of(first.payload)
    assert again.payload.seq == 0


async def test_bd_seq_goes_up_with_every_connect_and_across_restarts(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """[tck-id-payloads-ndeath-bdseq] and [tck-id-payloads-nbirth-bdseq]: the Will's
    NDEATH and the NBIRTH after it carry the same bdSeq, one more on each new MQTT
    session, also after the appliance restarted; an intentional stop publishes the
    NDEATH ([tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath])."""
    async with Host(broker.port) as host:
        edge = await start_node(broker.port, tmp_path / "state")
        await until(lambda: host.of("NBIRTH"), "the first NBIRTH")
        broker.stop()
        broker.start()
        await until(lambda: len(host.of("NBIRTH")) == 2, "the NBIRTH after the restart")
        deaths = len(host.of("NDEATH"))  # the broker may have sent the Will as it stopped
        await edge.node.stop()
        await until(lambda: len(host.of("NDEATH")) > deaths, "the NDEATH of the stop")
        edge = await start_node(broker.port, tmp_path / "state")
        await until(lambda: len(host.of("NBIRTH")) == 3, "the NBIRTH of the next run")
        await edge.node.stop()
    births = [bd_seq_of(r.payload) for r in host.of("NBIRTH")]
    assert births == [births[0], births[0] + 1, births[0] + 2]
    stop_death = host.of("NDEATH")[deaths].payload
    assert bd_seq_of(stop_death) == births[1]
    assert not stop_death.HasField("seq")
    assert [bd_seq_of(d.payload) for d in host.of("NDEATH")[:deaths]] in ([], [births[0]])


async def test_nothing_is_published_while_the_primary_host_is_offline(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-operational-behavior-primary-application-state-with-multiple-servers-
    walk] and [tck-id-operational-behavior-edge-node-birth-sequence-wait]: a host gone
    offline ends the session (NDEATH); the next waits for it, births, then the
    changes made meanwhile as historical data, in order."""
    host, edge = running
    await host.say(False)
    await until(lambda: host.of("NDEATH"), "the NDEATH for the host gone")
    await until(lambda: edge.context.said.get("sparkplug") is not None, "the status line")
    before = len(host.received)
    base = time.time_ns() // 1000
    stamps = [edge.context.feed({LEVEL_FIELD: float(v)}, t_us=base + 10_000 * v) for v in (1, 2, 3)]
    await until(lambda: edge.node.backlog is not None and edge.node.backlog.count == 3,
                "the changes in the backlog")  # fmt: skip
    assert [r.verb for r in host.received[before:] if r.verb != "STATE"] == []
    await host.say(True)
    wanted = [(t // 1000, float(v)) for v, t in zip((1, 2, 3), stamps, strict=True)]
    await until(lambda: host.history(LEVEL)[-3:] == wanted, "the changes made while offline")
    # the births carry the latest (3.0); the data before it, historical
    assert metric_named(host.of("DBIRTH")[-1].payload, "level").double_value == 3.0
    assert host.data(LEVEL)[-2:] == [(t, v, True) for t, v in wanted[:2]]
    assert host.of("NBIRTH")[-1].payload.seq == 0


async def test_a_broker_restart_mid_stream_loses_no_change(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Every change of a stream that runs on while the broker restarts arrives, in order;
    those made while it was away flagged historical. One sent just before the broker
    went may arrive twice (the same timestamp and value), never not at all."""
    async with Host(broker.port) as host:
        edge = await start_node(broker.port, tmp_path / "state")
        await until(lambda: edge.node.live, "live")
        sent: list[float] = []
        base = time.time_ns() // 1000

        async def stream() -> None:
            for value in range(1, 100_000):
                edge.context.feed({LEVEL_FIELD: float(value)}, t_us=base + 1000 * value)
                sent.append(float(value))
                await asyncio.sleep(0.002)

        streaming = asyncio.create_task(stream())
        await until(lambda: len(host.data(LEVEL)) > 50, "the stream arriving")
        broker.stop()
        await until(lambda: not edge.node.live, "the node seeing the broker gone")
        await until(lambda: len(sent) > len(host.data(LEVEL)) + 100, "changes while away")
        broker.start()
        await until(lambda: edge.node.live, "live again")
        back = len(host.data(LEVEL))
        await until(lambda: sum(not h for _, _, h in host.data(LEVEL)[back:]) > 20,
                    "live changes after the restart")  # fmt: skip
        streaming.cancel()
        last = sent[-1]
        await until(lambda: any(v == last for _, v, _ in host.data(LEVEL)), "the last change")
        await edge.node.stop()
    assert [v for _, v in host.history(LEVEL)[1:]] == sent, "every change, once each"
    in_data = list(dict.fromkeys(v for _, v, _ in host.data(LEVEL)))
    assert in_data == sorted(in_data), "sent in order (but for a repeat near the outage)"
    historical = [v for _, v, h in host.data(LEVEL) if h]
    assert historical, "those made while the broker was away are flagged historical"
    assert edge.node.dropped == 0


async def test_an_appliance_restarted_while_the_broker_is_down_loses_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Changes made before and after a restart of the appliance, all while the broker is
    down, wait in the backlog (SQLite, under the state directory) and arrive, in order,
    historical, once the broker is back."""
    state = tmp_path / "state"
    async with Host(broker.port) as host:
        edge = await start_node(broker.port, state)
        await until(lambda: edge.node.live, "live")
        broker.stop()
        await until(lambda: not edge.node.live, "the broker gone")
        base = time.time_ns() // 1000
        for value in range(1, 51):
            edge.context.feed({LEVEL_FIELD: float(value)}, t_us=base + 10_000 * value)
        await edge.node.stop()
        edge = await start_node(broker.port, state, level=50.0, t_us=base + 505_000)
        for value in range(51, 101):
            edge.context.feed({LEVEL_FIELD: float(value)}, t_us=base + 10_000 * value)
        broker.start()
        # 50.0 twice: its change, and the value the restarted io process was told
        wanted = [float(v) for v in range(1, 51)] + [float(v) for v in range(50, 101)]
        await until(lambda: [v for _, v in host.history(LEVEL)][-101:] == wanted,
                    "the 100 changes")  # fmt: skip

        await edge.node.stop()
    historical = [v for _, v, h in host.data(LEVEL) if h]
    assert historical[-100:] == wanted[:100], "historical, but for the last: the birth has it"
    assert edge.node.dropped == 0


async def test_a_dcmd_goes_to_the_control_process_to_be_checked(
    running: tuple[Host, Running],
) -> None:
    """[tck-id-operational-behavior-data-commands-dcmd-verb]: a host's write to a
    device metric (by name or alias) is never applied here: it goes to the control
    process as a ``sparkplug.write``, where every command is checked and audited."""
    host, edge = running
    by_name = Payload.Metric(name="setpoint", datatype=10, double_value=1.5)
    by_alias = Payload.Metric(alias=SETPOINT, datatype=10, double_value=0.5)
    unknown = Payload.Metric(name="nothing", datatype=10, double_value=1.0)
    await host.command("DCMD", "tank1", [by_name, by_alias, unknown])
    await until(lambda: any(r.topic == TOPIC_WRITE for r in edge.context.sent), "the write")
    (write,) = [r for r in edge.context.sent if r.topic == TOPIC_WRITE]
    index = SETPOINT - 1
    assert write.payload == [
        [index, 1.5, "tank1/setpoint"],
        [index, 0.5, f"tank1/alias {SETPOINT}"],
        [-1, 1.0, "tank1/nothing"],
    ]
    assert write.key.startswith(f"sparkplug host {HOST_ID}")
