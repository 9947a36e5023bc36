"""``/healthz`` and ``/readyz``: what a probe or a load balancer acts on.

Both are computed in the io process from what it can see without asking the control
process (which may be the thing that is stuck): the shared heartbeat block (ticks, the
time of the last one, the safe state's kinds, the io links) and the World mirror the
dashboards get (each device's ``DeviceHealth``).

``/healthz``: ``{"status": "ok"|"degraded"|"failed", "checks": {...}}``, each check
``{"status": ..., "detail": ...}``. HTTP 200 for ok and degraded (the appliance works;
something needs a look), 503 for failed (the control loop stalled or never started).
``/readyz``: 200 once the control loop ticks and every io link is up, 503 until then.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.realtime.heartbeat import Heartbeats, Slot
from edgeloop.safety.safe_state import kinds_of

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
_RANK = {OK: 0, DEGRADED: 1, FAILED: 2}

Mirror = Mapping[tuple[int, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Check:
    status: str
    detail: str


def checks(heartbeats: Heartbeats, mirror: Mirror, stall_s: float) -> dict[str, Check]:
    """Every check, by name."""
    return {
        "control_loop": _control_loop(heartbeats, stall_s),
        "safe_state": _safe_state(heartbeats),
        "io_links": _io_links(heartbeats),
        "devices": _devices(mirror),
    }


def overall(found: Mapping[str, Check]) -> str:
    return max((c.status for c in found.values()), key=_RANK.__getitem__, default=OK)


def health_body(
    heartbeats: Heartbeats, mirror: Mirror, stall_s: float
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the JSON body of ``/healthz``."""
    found = checks(heartbeats, mirror, stall_s)
    status = overall(found)
    body = {
        "status": status,
        "checks": {name: {"status": c.status, "detail": c.detail} for name, c in found.items()},
    }
    return (503 if status == FAILED else 200), body


def ready(heartbeats: Heartbeats, stall_s: float) -> tuple[bool, str]:
    """Whether the appliance is ready for traffic, and why not."""
    loop = _control_loop(heartbeats, stall_s)
    if loop.status != OK:
        return False, loop.detail
    links = _io_links(heartbeats)
    if links.status != OK:
        return False, links.detail
    return True, "ready"


def _control_loop(heartbeats: Heartbeats, stall_s: float) -> Check:
    ticks = heartbeats[Slot.CONTROL_TICKS]
    if ticks == 0:
        return Check(FAILED, "the control loop has not ticked yet")
    age_s = (time.monotonic_ns() - heartbeats[Slot.CONTROL_TICK_NS]) / 1e9
    if age_s > stall_s:
        return Check(FAILED, f"no tick for {age_s:.1f} s (tick {ticks})")
    p99_us = heartbeats[Slot.CONTROL_P99_LATENESS_NS] // 1000
    overruns = heartbeats[Slot.CONTROL_OVERRUNS]
    return Check(OK, f"tick {ticks}, lateness p99 {p99_us} µs, {overruns} overruns")


def _safe_state(heartbeats: Heartbeats) -> Check:
    kinds = kinds_of(heartbeats[Slot.SAFE_STATE])
    if kinds:
        return Check(DEGRADED, "outputs held safe: " + ", ".join(kinds))
    return Check(OK, "no cause holds the outputs")


def _io_links(heartbeats: Heartbeats) -> Check:
    up, workers = heartbeats[Slot.IO_LINKS_UP], heartbeats.io_workers
    if up < workers:
        return Check(DEGRADED, f"{up} of {workers} io links up")
    return Check(OK, f"{up} of {workers} io links up")


def _devices(mirror: Mirror) -> Check:
    names = {e: v.get("value") for (e, c), v in mirror.items() if c == "Name"}
    states = {
        str(names.get(e, e)): str(v.get("state"))
        for (e, c), v in mirror.items()
        if c == "DeviceHealth"
    }
    down = sorted(f"{name} {state}" for name, state in states.items() if state != "online")
    if down:
        return Check(DEGRADED, "not online: " + ", ".join(down))
    return Check(OK, f"{len(states)} online")
