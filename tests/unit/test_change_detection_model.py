"""Property test: queries with change filters agree with a naive reference model."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgeloop import Component, World

FIELD_VALUES = st.sampled_from([0.0, 1.0, 2.0])


class A(Component):
    v: float = 0.0


class B(Component):
    v: float = 0.0


class C(Component):
    v: float = 0.0


TYPES = (A, B, C)


class Model:
    """Per entity per type: (value, added tick, changed tick). Nothing clever."""

    def __init__(self) -> None:
        self.entities: dict[int, dict[type, list[float]]] = {}

    def matching(
        self,
        terms: tuple[type, ...],
        without: tuple[type, ...],
        changed: tuple[type, ...],
        added: tuple[type, ...],
        since: int,
    ) -> set[int]:
        return {
            e
            for e, comps in self.entities.items()
            if all(t in comps for t in terms)
            and not any(t in comps for t in without)
            and all(t in comps and comps[t][2] > since for t in changed)
            and all(t in comps and comps[t][1] > since for t in added)
        }


class ChangeDetection(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.model = Model()
        self.readers = [0, 0]  # two systems' last_run ticks

    def _tick(self) -> int:
        self.world.change_tick += 1
        return self.world.change_tick

    @rule(types=st.sets(st.sampled_from(TYPES), min_size=1))
    def spawn(self, types: set[type]) -> None:
        tick = self._tick()
        e = self.world.spawn(*(t() for t in sorted(types, key=lambda t: t.__name__)))
        self.model.entities[e] = {t: [0.0, tick, tick] for t in types}

    @precondition(lambda self: self.model.entities)
    @rule(data=st.data())
    def despawn(self, data: st.DataObject) -> None:
        e = data.draw(st.sampled_from(sorted(self.model.entities)))
        self._tick()
        self.world.despawn(e)
        del self.model.entities[e]

    @precondition(lambda self: self.model.entities)
    @rule(data=st.data(), t=st.sampled_from(TYPES))
    def insert(self, data: st.DataObject, t: type) -> None:
        e = data.draw(st.sampled_from(sorted(self.model.entities)))
        tick = self._tick()
        self.world.insert(e, t())
        self.model.entities[e][t] = [0.0, tick, tick]

    @precondition(lambda self: self.model.entities)
    @rule(data=st.data(), t=st.sampled_from(TYPES))
    def remove(self, data: st.DataObject, t: type) -> None:
        e = data.draw(st.sampled_from(sorted(self.model.entities)))
        self._tick()
        self.world.remove(e, t)
        self.model.entities[e].pop(t, None)

    @precondition(lambda self: self.model.entities)
    @rule(data=st.data(), t=st.sampled_from(TYPES), value=FIELD_VALUES)
    def write(self, data: st.DataObject, t: type, value: float) -> None:
        candidates = sorted(e for e, comps in self.model.entities.items() if t in comps)
        if not candidates:
            return
        e = data.draw(st.sampled_from(candidates))
        tick = self._tick()
        self.world.get(e, t).v = value
        record = self.model.entities[e][t]
        if record[0] != value:
            record[0] = value
            record[2] = tick

    @rule(
        reader=st.sampled_from([0, 1]),
        terms=st.sets(st.sampled_from(TYPES), min_size=1, max_size=2),
        without=st.sets(st.sampled_from(TYPES), max_size=1),
        changed=st.sets(st.sampled_from(TYPES), max_size=2),
        added=st.sets(st.sampled_from(TYPES), max_size=1),
    )
    def run_reader(
        self,
        reader: int,
        terms: set[type],
        without: set[type],
        changed: set[type],
        added: set[type],
    ) -> None:
        since = self.readers[reader]
        args = (tuple(terms), tuple(without), tuple(changed), tuple(added))
        got = self.world.query(
            *args[0], without=args[1], changed=args[2], added=args[3], since=since
        ).entities()
        assert len(got) == len(set(got)), "an entity is yielded once"
        assert set(got) == self.model.matching(*args, since)
        self.readers[reader] = self._tick()

    @invariant()
    def same_entities(self) -> None:
        assert set(self.world.entities()) == set(self.model.entities)


ChangeDetection.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestChangeDetection = ChangeDetection.TestCase
