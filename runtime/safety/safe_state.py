"""SafeState: the one path every fault takes to put outputs in their safe values.

Klipper's ``invoke_shutdown`` is the model: e-stop, a watchdog, an interlock, an
overrun under ``safe_stop``, the io process lost and Shutdown all ``trip`` a cause here,
and the output sides (the field bridge, the robots, GPIO outputs) read only this
resource to decide whether an output gets its safe value. Nothing else drives outputs
safe.

A cause has a scope: every output (``scope=None``), or one device's outputs (a device
watchdog). It ends when its condition goes (``release``), except a latched cause (an
e-stop), which ends only at a ``reset`` once its condition has gone; a reset while the
condition holds is refused for that cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeloop.component import Component

ENTITY = "safety"  # the entity whose SafeStateStatus shows the state

# A bit per kind of cause (the name before ":"), for the supervisor's status line: the
# heartbeat block carries counters, not text.
KINDS = ("estop", "watchdog", "interlock", "overrun", "io_lost", "shutdown")
_OTHER_BIT = 1 << len(KINDS)


def kinds_of(mask: int) -> list[str]:
    """The kinds of cause a ``SafeState.kinds_mask`` says."""
    kinds = [kind for bit, kind in enumerate(KINDS) if mask & (1 << bit)]
    return [*kinds, "other"] if mask & _OTHER_BIT else kinds


@dataclass(slots=True)
class Cause:
    name: str  # "estop", "watchdog:plc1", "interlock:door", "overrun", "io_lost", ...
    detail: str
    since_tick: int
    scope: str | None = None  # None: every output; else the device whose outputs it holds
    latched: bool = False  # ends only at a reset
    held: bool = True  # its condition is still present


@dataclass
class SafeState:
    """Resource: the causes that hold outputs safe, and a generation that moves on every
    change, so output sides act on a change once instead of comparing every tick."""

    causes: dict[str, Cause] = field(default_factory=dict)
    generation: int = 0

    @property
    def active(self) -> bool:
        """Whether any cause holds any output safe."""
        return bool(self.causes)

    @property
    def everything(self) -> bool:
        """Whether a cause holds every output safe."""
        return any(cause.scope is None for cause in self.causes.values())

    def safe_for(self, device: str) -> bool:
        """Whether ``device``'s outputs must hold their safe values."""
        return any(c.scope is None or c.scope == device for c in self.causes.values())

    def trip(
        self,
        name: str,
        detail: str,
        tick: int,
        *,
        scope: str | None = None,
        latched: bool = False,
    ) -> bool:
        """Hold outputs safe for ``name``; True if it was not holding them already."""
        cause = self.causes.get(name)
        if cause is not None:
            changed = not cause.held or cause.detail != detail
            cause.held, cause.detail = True, detail
            if changed:
                self.generation += 1
            return False
        self.causes[name] = Cause(name, detail, tick, scope, latched)
        self.generation += 1
        return True

    def release(self, name: str) -> bool:
        """The condition of ``name`` is gone: it ends, unless latched (then it waits for
        a reset). True if the cause ended."""
        cause = self.causes.get(name)
        if cause is None or not cause.held:
            return False
        cause.held = False
        self.generation += 1
        if cause.latched:
            return False
        del self.causes[name]
        return True

    def reset(self) -> tuple[list[str], list[str]]:
        """An operator's reset: latched causes whose condition is gone end. The names
        that ended, and those refused because their condition still holds."""
        ended = [c.name for c in self.causes.values() if c.latched and not c.held]
        refused = [c.name for c in self.causes.values() if c.latched and c.held]
        for name in ended:
            del self.causes[name]
        if ended:
            self.generation += 1
        return ended, refused

    def kinds_mask(self) -> int:
        mask = 0
        for name in self.causes:
            kind = name.partition(":")[0]
            mask |= 1 << KINDS.index(kind) if kind in KINDS else _OTHER_BIT
        return mask

    def describe(self) -> str:
        """The causes for a status line: ``estop (pressed), watchdog:plc1 (...)``."""
        return ", ".join(f"{c.name} ({c.detail})" for c in self.causes.values())


class SafeStateStatus(Component):
    """The safe state as the World shows it (on the ``safety`` entity)."""

    active: bool = False
    causes: str = ""  # as ``SafeState.describe``
    since_tick: int = 0  # when it became active


FieldKey = tuple[str, str, str]  # (entity, component, field)


class HeldOutputs:
    """Resource: the output fields an output side holds at a safe (or its last) value
    right now, whatever control logic writes. Logic that drives one (a PID) tracks the
    held value instead of winding up, and carries on from it when the state ends."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: set[FieldKey] = set()
