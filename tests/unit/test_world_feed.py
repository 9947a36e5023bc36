from __future__ import annotations

from edgeloop.net.world_feed import WORLD_REMOVED, WORLD_VALUE, WorldMirror
from edgeloop.priority import Priority
from edgeloop.realtime.ipc import Record


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
