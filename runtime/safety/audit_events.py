"""What the control process puts in the audit log: a helper for systems, the safe
state's causes as they begin and end, and every alarm transition."""

from __future__ import annotations

from edgeloop.alarms import Alarms
from edgeloop.clock import Time
from edgeloop.safety.audit import AuditLog
from edgeloop.safety.safe_state import SafeState
from edgeloop.world import World


def audit(world: World, event: str, **fields: object) -> None:
    """Append ``event`` (only queued: the tick never waits on the disk) when the App
    has an audit log (the control process; not one-process tests or replay)."""
    log = world.get_resource(AuditLog)
    if log is not None:
        log.append(event, tick=world.resource(Time).tick, **fields)


class _Audited:
    """Resource: the causes the audit log has seen, and at which generation."""

    def __init__(self) -> None:
        self.generation = 0
        self.causes: dict[str, str] = {}


def audit_safe_state(world: World) -> None:
    """SafetyStatus: every cause that began or ended since the last tick."""
    safe = world.resource(SafeState)
    seen = world.get_resource(_Audited)
    if seen is None:
        seen = _Audited()
        world.insert_resource(seen)
    if seen.generation == safe.generation:
        return
    seen.generation = safe.generation
    now = {name: cause.detail for name, cause in safe.causes.items()}
    for name, detail in now.items():
        if seen.causes.get(name) != detail:
            audit(world, "safety.trip", cause=name, detail=detail)
    for name in seen.causes.keys() - now.keys():
        audit(world, "safety.end", cause=name)
    seen.causes = now


def audit_alarm_transitions(world: World) -> None:
    """SafetyStatus: every alarm state change since the last tick, at its own tick.

    Taken even without an audit log (one-process runs), so the bounded list of
    transitions does not fill and count drops nobody caused."""
    transitions = world.resource(Alarms).transitions()
    log = world.get_resource(AuditLog)
    if log is None:
        return
    for t in transitions:
        by = {"by": t.by} if t.by else {}  # only an acknowledge has an operator
        log.append("alarm", tick=t.tick, source=t.source, state=str(t.state), text=t.text,
                   severity=t.severity.value, **by)  # fmt: skip
