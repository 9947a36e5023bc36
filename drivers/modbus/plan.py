"""Block-read planning: the fewest read requests that cover a set of points.

A point occupies registers (or bits) ``[start, end)``. A request reads one contiguous
range of at most ``limit`` registers and serves every point lying wholly inside it; the
registers it reads that no served point uses come in runs, and no run may be longer
than ``max_gap`` (a device with holes in its register map answers a read across a hole
with an exception, so the gap it tolerates is the user's to set).

The plan is minimal. Call "open" the points not yet served, and let p be the open point
that starts first. Every point before p in start order is served, and because every
open point ends after those served, the set still open is always "the points that end
after some threshold t". A request serving p can start at p's start: starting earlier
only lengthens it, and the registers between p's start and t are covered by p itself,
so nothing earlier can fill a gap. Such a request ending at e' leaves open the points
ending after e'; fewer points open can never need more requests, so the request ending
furthest right that is still valid is the best choice. That greedy step is optimal at
each threshold, hence overall (tests check it against a brute-force search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REGISTER_LIMIT = 125  # registers per read of holding/input registers (FC3/FC4)
BIT_LIMIT = 2000  # bits per read of coils/discrete inputs (FC1/FC2)


@dataclass(frozen=True, slots=True)
class Request:
    """Read ``count`` registers from ``start``; ``points`` are the positions (in the
    planner's input) of the points this request serves, each served by exactly one."""

    start: int
    count: int
    points: tuple[int, ...]


def plan_reads(spans: Sequence[tuple[int, int]], limit: int, max_gap: int = 0) -> list[Request]:
    """The fewest requests that together serve every ``(start, end)`` span.

    ``ValueError`` if a span is empty or longer than ``limit``.
    """
    for start, end in spans:
        if not 0 < end - start <= limit:
            raise ValueError(f"span [{start}, {end}) does not fit a request of {limit}")
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    requests: list[Request] = []
    threshold = -1  # every point ending at or before it is served
    first = 0  # position in `order` from which open points are searched
    while True:
        while first < len(order) and spans[order[first]][1] <= threshold:
            first += 1
        if first == len(order):
            return requests
        start = spans[order[first]][0]
        reach = first  # order[first:reach]: the points starting within a request's reach
        while reach < len(order) and spans[order[reach]][0] < start + limit:
            reach += 1
        nearby = order[first:reach]
        window = [spans[i] for i in nearby if spans[i][1] <= start + limit]
        end = _furthest_valid_end(window, start, spans[order[first]][1], max_gap)
        served = tuple(sorted(i for i in nearby if threshold < spans[i][1] <= end))
        requests.append(Request(start, end - start, served))
        threshold = end


def _furthest_valid_end(
    window: list[tuple[int, int]], start: int, shortest: int, max_gap: int
) -> int:
    ends = sorted({end for _, end in window if end >= shortest}, reverse=True)
    for end in ends:
        if _gaps_fit(window, start, end, max_gap):
            return end
    return shortest  # not reached: the first point alone always fits


def _gaps_fit(window: list[tuple[int, int]], start: int, end: int, max_gap: int) -> bool:
    """Whether the points inside ``[start, end)`` leave no unread-for-nothing run longer
    than ``max_gap``."""
    covered = start
    for span_start, span_end in window:
        if span_end > end:
            continue
        if span_start - covered > max_gap:
            return False
        if span_end > covered:
            covered = span_end
    return True
