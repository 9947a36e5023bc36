from __future__ import annotations

from edgeloop import Alarms, App
from edgeloop.component import Component
from edgeloop.names import Name
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.net.world_feed import OVERSIZE_ALARM, WORLD_REMOVED, WORLD_VALUE, WorldMirror
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import MAX_RECORD_BYTES, Channel, Record, socketpair


def _value(entity: int, component: str, values: dict[str, object]) -> Record:
    return Record(
        WORLD_VALUE, f"{entity}:{component}", int(Priority.NORMAL), [entity, component, values]
    )


def test_mirror_reports_changes_since_a_version_and_removals_once() -> None:
    mirror = WorldMirror()
    mirror.apply(_value(1, "Level", {"m": 1.0}))
    mirror.apply(_value(2, "Level", {"m": 2.0}))
    seen = mirror.version
    mirror.apply(_value(1, "Level", {"m": 1.5}))
    mirror.apply(Record(WORLD_REMOVED, "2", int(Priority.NORMAL), 2))
    assert mirror.since(seen) == ([(1, "Level")], [2])
    assert mirror.values == {(1, "Level"): {"m": 1.5}}
    assert mirror.since(0) == ([(1, "Level")], []), "a new subscriber gets the state, no removals"
    mirror.forget_removals(mirror.version)
    assert mirror.since(seen) == ([(1, "Level")], [])


class Notes(Component):
    text: str = ""


def test_a_component_too_big_for_the_io_channel_is_left_out_with_an_alarm() -> None:
    """One value past the record limit must not stop the control loop for a view of the
    World: the others go on, an alarm names it, and clears once it fits again."""
    control_end, io_end = socketpair()
    io = Channel(io_end)
    try:
        app = App(rate_hz=100)
        app.insert_resource(Registry())
        app.add_plugin(IoLinkPlugin(IoLink(Channel(control_end))))
        app.add_plugin(NetworkPlugin(NetworkConfig()))
        big = app.world.spawn(Name("big"), Notes("x" * (MAX_RECORD_BYTES + 1)))
        small = app.world.spawn(Name("small"), Notes("fits"))
        app.run_for(5)  # past a 30 Hz WebUIUpdates
        sent = {r.key for batch in io.receive() for r in batch.records if r.topic == WORLD_VALUE}
        assert f"{small}:Notes" in sent and f"{big}:Notes" not in sent
        alarm = app.world.resource(Alarms).get(OVERSIZE_ALARM)
        assert alarm is not None and alarm.active and f"{big}:Notes" in alarm.text
        app.world.get(big, Notes).text = "short now"
        app.run_for(5)
        sent = {r.key for batch in io.receive() for r in batch.records if r.topic == WORLD_VALUE}
        assert f"{big}:Notes" in sent
        assert not app.world.resource(Alarms).get(OVERSIZE_ALARM).active
    finally:
        io.close()
