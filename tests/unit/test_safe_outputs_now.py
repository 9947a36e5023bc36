"""On an e-stop edge the output sides apply the safe state at once, field drivers first,
and each one's records leave before the next one runs."""

from __future__ import annotations

from collections.abc import Callable

from edgeloop import App, World
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, socketpair
from edgeloop.safety.systems import apply_safe_state_now, safe_output


def _stop(key: str, records: int = 1) -> Callable[[World], None]:
    def system(world: World) -> None:
        for i in range(records):
            world.resource(IoLink).send("safe", f"{key}{i}", None, Priority.CRITICAL)

    return system


def test_field_outputs_go_first_and_each_side_leaves_in_its_own_batch() -> None:
    control_end, io_end = socketpair()
    app = App()
    app.add_plugin(IoLinkPlugin(IoLink(Channel(control_end))))
    safe_output(app, _stop("robot", records=100))  # a fleet: a stop per robot
    safe_output(app, _stop("pump"), first=True)
    safe_output(app, _stop("valve"), first=True)
    app.startup()
    apply_safe_state_now(app.world)
    batches = Channel(io_end).receive()
    assert [[r.key for r in b.records] for b in batches[:2]] == [["pump0"], ["valve0"]]
    assert [len(b.records) for b in batches[2:]] == [100]
