"""The control side of the data log: what a tick hands the io process's logger."""

from __future__ import annotations

from typing import Any

import msgpack

from edgeloop.app import App
from edgeloop.component import Component
from edgeloop.data.collect import TOPIC_BATCH, DataCollector
from edgeloop.data.config import DataLogConfig, FieldRule
from edgeloop.data.plugin import DataLogPlugin
from edgeloop.names import Name
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin


class Tank(Component):
    level: float = 0.0
    pump_on: bool = False
    mode: str = "auto"  # not a number: not logged
    count: int = 0


class Anonymous(Component):
    value: float = 0.0


def _app(config: DataLogConfig) -> tuple[App, IoLink, Tank]:
    app = App()
    link = IoLink()
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(DataLogPlugin(config))
    tank = Tank()
    app.world.spawn(Name("tank1"), tank)
    app.world.spawn(Anonymous())
    app.startup()
    return app, link, tank


def _batches(link: IoLink) -> list[list[Any]]:
    (outbox,) = link.outboxes
    found = []
    for raw in list(outbox._latest.values()):
        topic, _, _, payload = msgpack.unpackb(raw)
        if topic == TOPIC_BATCH:
            found.append(payload)
    outbox._latest.clear()
    return found


def _samples(link: IoLink, names: dict[int, str]) -> list[tuple[int, str, Any]]:
    found = []
    for tick, _, declared, flat in _batches(link):
        names.update((ident, name) for ident, name, _ in declared)
        found += [(tick, names[i], v) for i, v in zip(flat[0::2], flat[1::2], strict=True)]
    return found


def test_changed_numbers_and_booleans_of_named_entities_are_logged_once_each() -> None:
    app, link, tank = _app(DataLogConfig())
    names: dict[int, str] = {}
    app.run_for(1)
    first = _samples(link, names)
    assert sorted(name for _, name, _ in first) == [
        "tank1.Tank.count", "tank1.Tank.level", "tank1.Tank.pump_on",
    ], "the initial values; not the string, not the unnamed entity"  # fmt: skip
    tank.level, tank.pump_on = 0.5, True
    app.run_for(1)
    tick = app.time.tick
    assert sorted(_samples(link, names)) == [
        (tick, "tank1.Tank.level", 0.5), (tick, "tank1.Tank.pump_on", True),
    ]  # fmt: skip
    app.run_for(3)
    assert _samples(link, names) == [], "nothing changed: nothing sent"


def test_deadband_and_minimum_interval_hold_changes_back_but_never_the_last_one() -> None:
    rule = FieldRule(match="tank1.Tank.level", deadband=0.1, min_interval_s=0.05)
    app, link, tank = _app(DataLogConfig(fields=[rule], exclude=["*.count"]))
    names: dict[int, str] = {}
    app.run_for(1)
    assert {n for _, n, _ in _samples(link, names)} == {"tank1.Tank.level", "tank1.Tank.pump_on"}
    tank.level = 0.05
    app.run_for(10)
    assert _samples(link, names) == [], "within the deadband"
    tank.level = 0.5
    app.run_for(1)
    assert [v for _, _, v in _samples(link, names)] == [0.5]
    tank.level = 1.0  # past the deadband, but 1 tick after the last: held back
    app.run_for(1)
    tank.level = 1.5
    app.run_for(1)
    assert _samples(link, names) == []
    app.run_for(5)
    assert [v for _, _, v in _samples(link, names)] == [1.5], "the latest, once the 5 ticks pass"


def test_a_restarted_io_process_is_told_every_name_and_value_again() -> None:
    app, link, tank = _app(DataLogConfig())
    app.run_for(1)
    assert sum(len(d) for _, _, d, _ in _batches(link)) == 3
    link.generations[0] += 1  # what replacing the channel does
    tank.level = 2.0
    app.run_for(1)
    batches = _batches(link)
    assert sorted(n for _, _, d, _ in batches for _, n, _ in d) == [
        "tank1.Tank.count", "tank1.Tank.level", "tank1.Tank.pump_on",
    ]  # fmt: skip
    names = {i: n for _, _, d, _ in batches for i, n, _ in d}
    sent = {
        names[i]: v for _, _, _, flat in batches for i, v in zip(flat[::2], flat[1::2], strict=True)
    }
    assert sent == {"tank1.Tank.count": 0, "tank1.Tank.level": 2.0, "tank1.Tank.pump_on": False}
    assert app.world.resource(DataCollector).samples == 6
    app.run_for(1)
    assert _batches(link) == [], "once: nothing changed since"


def test_a_big_tick_is_split_into_records_the_io_channel_carries() -> None:
    app = App()
    link = IoLink()
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(DataLogPlugin(DataLogConfig()))
    tanks = [Tank() for _ in range(3000)]
    for index, tank in enumerate(tanks):
        app.world.spawn(Name(f"tank{index}"), tank)
    app.startup()
    app.run_for(1)
    _batches(link)
    for tank in tanks:
        tank.level, tank.count = 1.0, 1
    app.run_for(1)
    batches = _batches(link)
    assert sum(len(flat) // 2 for *_, flat in batches) == 6000
    assert len(batches) == 3 and all(len(msgpack.packb(b)) < 64 * 1024 for b in batches)


def test_a_field_an_uplink_publishes_is_collected_but_declared_not_logged() -> None:
    app, link, tank = _app(DataLogConfig(exclude=["tank1.Tank.count"]))
    app.world.resource(DataCollector).feed.add("tank1.Tank.count")
    tank.count = 3
    app.run_for(1)
    declared = {name: logged for _, _, d, _ in _batches(link) for _, name, logged in d}
    assert declared == {"tank1.Tank.level": True, "tank1.Tank.pump_on": True,
                        "tank1.Tank.count": False}  # fmt: skip
