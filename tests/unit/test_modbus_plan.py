"""The block-read planner: minimal, within the protocol limits and the max gap, complete."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.drivers.modbus.plan import REGISTER_LIMIT, Request, plan_reads


def _valid(spans: list[tuple[int, int]], start: int, end: int, limit: int, max_gap: int) -> bool:
    """A request [start, end) by the definition: within the limit, and no run of registers
    that no point wholly inside uses longer than max_gap."""
    if not 0 < end - start <= limit:
        return False
    used = set()
    for s, e in spans:
        if start <= s and e <= end:
            used.update(range(s, e))
    run = 0
    for register in range(start, end):
        run = 0 if register in used else run + 1
        if run > max_gap:
            return False
    return True


def _brute_force_minimum(spans: list[tuple[int, int]], limit: int, max_gap: int) -> int:
    """Breadth-first search over the sets of served points, trying every request range
    between a point's start and a point's end."""
    full = (1 << len(spans)) - 1
    moves = set()
    for start, end in itertools.product({s for s, _ in spans}, {e for _, e in spans}):
        if _valid(spans, start, end, limit, max_gap):
            mask = sum(1 << i for i, (s, e) in enumerate(spans) if start <= s and e <= end)
            moves.add(mask)
    reached = {0}
    depth = 0
    while full not in reached:
        reached = {have | move for have in reached for move in moves}
        depth += 1
    return depth


small_spans = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 6)).map(lambda p: (p[0], p[0] + p[1])),
    min_size=1,
    max_size=7,
)


@settings(max_examples=400, deadline=None)
@given(spans=small_spans, limit=st.integers(6, 16), max_gap=st.integers(0, 5))
def test_request_count_equals_the_brute_force_minimum(
    spans: list[tuple[int, int]], limit: int, max_gap: int
) -> None:
    requests = plan_reads(spans, limit, max_gap)
    assert len(requests) == _brute_force_minimum(spans, limit, max_gap)


@settings(max_examples=300, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.integers(0, 3000), st.integers(1, 60)).map(lambda p: (p[0], p[0] + p[1])),
        min_size=1,
        max_size=80,
    ),
    max_gap=st.integers(0, 30),
)
def test_every_point_is_served_once_within_limits_and_gap(
    spans: list[tuple[int, int]], max_gap: int
) -> None:
    requests = plan_reads(spans, REGISTER_LIMIT, max_gap)
    served = sorted(i for request in requests for i in request.points)
    assert served == list(range(len(spans)))
    for request in requests:
        end = request.start + request.count
        assert _valid(spans, request.start, end, REGISTER_LIMIT, max_gap)
        for i in request.points:
            assert request.start <= spans[i][0] and spans[i][1] <= end


def test_contiguous_registers_fill_whole_requests() -> None:
    spans = [(address, address + 1) for address in range(1000)]
    requests = plan_reads(spans, REGISTER_LIMIT)
    assert [(r.start, r.count) for r in requests] == [(i * 125, 125) for i in range(8)]


def test_a_gap_wider_than_max_gap_splits_the_read() -> None:
    spans = [(0, 2), (10, 12)]
    assert len(plan_reads(spans, REGISTER_LIMIT, max_gap=7)) == 2
    assert plan_reads(spans, REGISTER_LIMIT, max_gap=8) == [Request(0, 12, (0, 1))]


def test_a_point_longer_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        plan_reads([(0, 126)], REGISTER_LIMIT)
