"""The control side of the providers' listening sockets: health and alarm per listener.

At Startup each configured provider becomes an entity (``Name("network.tcp")`` +
``ListenerHealth``), as a field device does with ``DeviceHealth``. The io workers report
each change of their listener (``edgeloop.net.listener``); a listener is ``listening``
once every worker that reported has bound it. While one cannot, the alarm
``network.<provider>`` says which address and why, and clears when it binds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edgeloop.alarms import Alarms, Severity
from edgeloop.component import Component
from edgeloop.names import Name
from edgeloop.world import World

log = logging.getLogger("edgeloop.net")


class ListenerHealth(Component):
    """How a network provider's listening socket is doing, as its io workers last said."""

    provider: str = ""
    address: str = ""
    state: str = "starting"  # "listening", "not_listening"
    last_error: str = ""


@dataclass
class Listeners:
    """Resource: the listeners' entities and what each io worker last reported."""

    entities: dict[str, int] = field(default_factory=dict)
    # provider -> worker -> why it is not listening ("": it is)
    reports: dict[str, dict[int, str]] = field(default_factory=dict)

    def spawner(self, providers: list[tuple[str, str]]) -> Any:
        """A Startup system spawning one entity per (provider, address)."""

        def spawn_listeners(world: World) -> None:
            for provider, address in providers:
                health = ListenerHealth(provider=provider, address=address)
                self.entities[provider] = world.spawn(Name(f"network.{provider}"), health)

        return spawn_listeners


def apply_listener_report(world: World, payload: Any, tick: int) -> None:
    """One io worker's news of one listener, into its health and alarm."""
    provider, worker, address, listening, error = payload
    listeners = world.resource(Listeners)
    reports = listeners.reports.setdefault(provider, {})
    reports[worker] = "" if listening else f"{provider} {address} not listening ({error})"
    problems = sorted({p for p in reports.values() if p})
    entity = listeners.entities.get(provider)
    if entity is not None and world.is_alive(entity):
        health = world.get(entity, ListenerHealth)
        health.state = "not_listening" if problems else "listening"
        health.last_error = "" if listening else error
    alarms = world.resource(Alarms)
    source = f"network.{provider}"
    alarm = alarms.get(source)
    if not problems:
        if alarm is not None and alarm.active:
            alarms.clear(source, tick)
            log.info("alarm %s cleared at tick %d: %s listening", source, tick, provider)
        return
    text = "; ".join(problems)
    if alarm is None or not alarm.active or alarm.text != text:
        alarms.activate(source, text, Severity.FAULT, tick)
        log.warning("alarm %s at tick %d: %s", source, tick, text)
