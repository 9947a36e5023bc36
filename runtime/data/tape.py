"""The inputs of the control process that do not come on the io channel — GPIO lines
it reads itself, and the wake sources that run handlers between ticks or between the
sets of a tick — on tape: taken
down while recording, played back in a replay.

Whoever opens such an input asks the ``InputTape`` resource, when the App has one, to
wrap it (``line``) or its handler (``wake``). Without a tape (most Apps) nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeloop.clock import Time
from edgeloop.drivers.gpio import InputLine
from edgeloop.safety.systems import WakeSources
from edgeloop.world import World


class InputTape:
    """Resource. Recording: ``emit`` gets an event for every change of a taped input
    and every wake. Replay: ``load`` the recorded changes; reads return them."""

    def __init__(self, world: World, emit: Callable[[list[Any]], None] | None = None) -> None:
        self.world = world
        self.emit = emit
        self.reads: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self._changes: dict[str, dict[int, Any]] = {}
        self.handlers: dict[str, Callable[[], None]] = {}

    @property
    def replaying(self) -> bool:
        return self.emit is None

    def read(self, name: str, live: Callable[[], Any]) -> Any:
        """The value of input ``name`` at this read: the live one (recorded if it
        changed) or, replaying, the recorded one."""
        count = self.reads[name] = self.reads.get(name, 0) + 1
        if self.emit is None:
            changed = self._changes.get(name, {}).pop(count, _UNSET)
            if changed is not _UNSET:
                self.values[name] = changed
            return self.values.get(name)
        value = live()
        if name not in self.values or self.values[name] != value:
            self.values[name] = value
            self.emit(["in", name, count, value])
        return value

    def load(self, name: str, count: int, value: Any) -> None:
        self._changes.setdefault(name, {})[count] = value

    def line(self, name: str, line: InputLine) -> TapedLine:
        return TapedLine(self, name, line)

    def wake(self, name: str, handler: Callable[[], None]) -> Callable[[], None]:
        """``handler`` as the wake source's callback: recorded when it runs; replaying,
        run by the replay where the recording says (``handlers``)."""
        self.handlers[name] = handler
        if self.emit is None:
            return lambda: None

        wake = self.world.get_resource(WakeSources)

        def recorded() -> None:
            assert self.emit is not None
            tick = self.world.resource(Time).tick
            position = None if wake is None else wake.position
            self.emit(["wake", tick, name] if position is None else ["wake", tick, name, position])
            handler()

        return recorded


_UNSET = object()


class TapedLine:
    """An input line whose level goes through the tape."""

    __slots__ = ("line", "name", "tape")

    def __init__(self, tape: InputTape, name: str, line: InputLine) -> None:
        self.tape = tape
        self.name = name
        self.line = line

    def active(self) -> bool:
        return bool(self.tape.read(self.name, self.line.active))

    def read_edges(self) -> int:
        return 0 if self.tape.replaying else self.line.read_edges()

    def fileno(self) -> int:
        return self.line.fileno()

    def close(self) -> None:
        self.line.close()
