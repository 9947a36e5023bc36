"""``edgeloop replay FILE``: the recorded App again, one process, manual clock, fed each
tick exactly what it consumed; every recorded state hash checked.

The App is built from the config in the recording (its state directory swapped for a
scratch one, so a replay touches nothing of the appliance's), with a ``ReplayLink``
standing in for the io channel (its records from the recording, its up/down and
restarts as recorded, what the App sends to it dropped) and an ``InputTape`` playing
back the GPIO lines and wake handlers. The first hash that differs ends the replay:
the tick, and which component types differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.app import App
from edgeloop.config import Config, RuntimeConfig, installed_sections
from edgeloop.data.recording import RecordingError, read_recording
from edgeloop.data.tape import InputTape
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Outbox, Record
from edgeloop.schedule import FixedUpdate


class ReplayLink(IoLink):
    """The io link as the recording saw it: no channel, the recorded up/down."""

    def __init__(self, workers: int) -> None:
        super().__init__(*([None] * workers), records_per_tick=1 << 30)
        self.ups = [True] * workers

    def worker_up(self, worker: int) -> bool:
        return self.ups[worker]

    @property
    def links_up(self) -> int:
        return sum(self.ups)

    def set_state(self, ups: list[bool], generations: list[int]) -> None:
        self.ups[:] = ups
        self.generations[:] = generations

    def drop_outputs(self) -> None:
        self.outboxes[:] = [Outbox() for _ in self.outboxes]


@dataclass(frozen=True, slots=True)
class Divergence:
    tick: int
    recorded: str
    replayed: str
    components: list[str]  # the component types whose data differ


@dataclass(slots=True)
class ReplayResult:
    ticks: int = 0
    hashes_checked: int = 0
    divergence: Divergence | None = None
    end: str = ""  # what the recording's end said ("" if it has none: cut short)
    recorded_by: str = ""  # the edgeloop version that recorded it
    notes: list[str] = field(default_factory=list)


def config_of(head: dict[str, Any], state_dir: Path) -> Config:
    """The recorded config, with ``state_dir`` for the replay's own and no recording."""
    runtime = RuntimeConfig.model_validate(
        {**head["runtime"], "state_dir": str(state_dir), "record": None}
    )
    recorded = head["sections"]
    models = {section.name: section.model for section in installed_sections(recorded)}
    missing = sorted(set(recorded) - set(models))
    if missing:
        raise RecordingError(f"sections not installed here: {', '.join(missing)}")
    sections = {name: models[name].model_validate(value) for name, value in recorded.items()}
    return Config(Path("(recording)"), runtime, sections, [])


def replay(
    path: Path, state_dir: Path, change: Callable[[App], None] | None = None
) -> ReplayResult:
    """Replay the recording at ``path``; ``change`` may alter the App before it starts
    (a test's way to show a divergence)."""
    head, events = read_recording(path)
    config = config_of(head, state_dir)
    app = App.from_config(config)
    link = ReplayLink(config.runtime.io_workers)
    app.add_plugin(IoLinkPlugin(link))
    tape = InputTape(app.world)
    app.insert_resource(tape)
    if change is not None:
        change(app)
    result = ReplayResult(recorded_by=str(head.get("edgeloop", "?")))
    steps = _steps(events)
    prefix = next(steps, [])
    _load_inputs(tape, prefix, link)
    app.startup()
    for step in steps:
        if not _run_step(app, link, tape, step, result):
            break
    return result


def _steps(events: Iterator[list[Any]]) -> Iterator[list[list[Any]]]:
    """The events before the first tick, then each tick's: from its ``link`` or
    ``tick`` event to the next."""
    step: list[list[Any]] = []
    for event in events:
        starts = event[0] == "link" or (event[0] == "tick" and not (step and step[-1][0] == "link"))
        if starts:
            yield step
            step = []
        step.append(event)
    yield step


def _load_inputs(tape: InputTape, step: list[list[Any]], link: ReplayLink) -> None:
    for event in step:
        if event[0] == "in":
            _, name, count, value = event
            tape.load(name, count, value)
        elif event[0] == "link":
            link.set_state(event[2], event[3])


def _run_step(
    app: App, link: ReplayLink, tape: InputTape, step: list[list[Any]], result: ReplayResult
) -> bool:
    """Run one recorded tick and what followed it; False when the replay ends here."""
    _load_inputs(tape, step, link)
    for event in step:
        kind = event[0]
        if kind == "tick":
            tick, records = event[1], event[2]
            link.inbox.extend(Record(topic, key, 0, payload) for topic, key, payload in records)
            during = [e for e in step if e[0] == "wake" and len(e) == 4 and e[1] == tick]
            app.schedule(FixedUpdate).between_sets = _wakes_between_sets(tape, during, result)
            app.tick()
            app.schedule(FixedUpdate).between_sets = None
            link.drop_outputs()
            result.ticks += 1
            if app.time.tick != tick:
                result.notes.append(f"recorded tick {tick} replayed as {app.time.tick}")
        elif kind == "wake" and len(event) == 3:
            _run_wake(tape, event, result)
        elif kind == "update":
            app.update()
        elif kind == "hash":
            result.hashes_checked += 1
            replayed = app.world.state_hash()
            if replayed != event[2]:
                ours = app.world.component_hashes()
                theirs: dict[str, str] = event[3]
                differ = sorted(
                    k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)
                )
                result.divergence = Divergence(event[1], event[2], replayed, differ)
                return False
        elif kind == "end":
            result.end = str(event[2])
            return False
    return True


def _wakes_between_sets(
    tape: InputTape, during: list[list[Any]], result: ReplayResult
) -> Callable[[str], None] | None:
    """The tick's hook that runs each wake recorded during it after the same set."""
    if not during:
        return None
    pending = list(during)

    def between_sets(set_name: str) -> None:
        while pending and pending[0][3] == set_name:
            _run_wake(tape, pending.pop(0), result)

    return between_sets


def _run_wake(tape: InputTape, event: list[Any], result: ReplayResult) -> None:
    handler = tape.handlers.get(event[2])
    if handler is None:
        result.notes.append(f"tick {event[1]}: no wake handler {event[2]!r} here")
    else:
        handler()
