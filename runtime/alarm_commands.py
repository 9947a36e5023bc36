"""An operator's acknowledge of an alarm over the network, and its answer.

``alarm.Acknowledge`` (operator or admin; a viewer's is refused by the registry) names
the alarm's source (``watchdog:plc1``, ``alarm:tank_high``); the appliance answers
``alarm.AckResult``: accepted, or why not (no such alarm, or nothing to acknowledge).
Every acknowledge is audited with who gave it; the state changes it causes are audited
with the other transitions (``edgeloop.safety.audit_events``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.alarms import Alarms
from edgeloop.clock import Time
from edgeloop.net.network import Network, read_network
from edgeloop.net.registry import message
from edgeloop.priority import Priority
from edgeloop.safety.audit_events import audit
from edgeloop.world import World


@message(name="alarm.Acknowledge", priority=Priority.HIGH, senders=("operator", "admin"))
@dataclass
class Acknowledge:
    source: str
    command_id: int = 0


@message(name="alarm.AckResult", priority=Priority.HIGH, senders=())
@dataclass
class AckResult:
    source: str
    accepted: bool
    reason: str
    command_id: int = 0


def acknowledge_alarms(world: World) -> None:
    """Operators' acknowledges, answered and audited."""
    network = world.resource(Network)
    alarms = world.resource(Alarms)
    tick = world.resource(Time).tick
    for data in read_network(world, Acknowledge):
        asked = data.message
        who = network.describe(data.connection)
        alarm = alarms.get(asked.source)
        if alarm is None:
            accepted, reason = False, f"no alarm {asked.source!r}"
        elif alarms.acknowledge(asked.source, by=who, tick=tick):
            accepted, reason = True, f"acknowledged; now {alarm.state}"
        else:
            accepted, reason = False, f"already acknowledged by {alarm.acked_by}"
        audit(world, "alarm.acknowledge", by=who, source=asked.source, accepted=accepted,
              reason=reason, command_id=asked.command_id)  # fmt: skip
        network.send(
            world, data.connection, AckResult(asked.source, accepted, reason, asked.command_id)
        )
