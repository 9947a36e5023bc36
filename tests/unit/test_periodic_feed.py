"""PeriodicFeed: one message a period for every subscriber alike; a congested one gets
the newest when it has room, not each one it missed."""

from __future__ import annotations

import asyncio
from typing import Any

from edgeloop.net.periodic_feed import PeriodicFeed


class Peer:
    """What the feed uses of a Session: its id, congestion and the shared send."""

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.busy = False
        self.got: list[object] = []
        self.encodings: list[dict[str, Any]] = []

    def congested(self) -> bool:
        return self.busy

    def send_shared(self, msg: object, encoded: dict[str, Any]) -> None:
        self.got.append(msg)
        self.encodings.append(encoded)


async def test_each_subscriber_gets_the_newest_once_and_a_congested_one_catches_up() -> None:
    counter = iter(range(1, 1000))
    changed = {"yes": True}

    def build() -> object | None:
        return next(counter) if changed["yes"] else None

    feed = PeriodicFeed(3600.0, build)  # ticks driven by hand below
    a, b = Peer(1), Peer(2)
    feed.subscribe(a)  # type: ignore[arg-type]
    assert a.got == [1], "the first subscriber starts the feed: the message at once"
    b.busy = True
    feed.subscribe(b)  # type: ignore[arg-type]
    assert b.got == [], "congested: nothing yet"
    feed._tick()
    feed._tick()
    assert a.got == [1, 2, 3]
    b.busy = False
    changed["yes"] = False
    feed._tick()  # nothing new: only the one behind gets the newest
    assert (a.got, b.got) == ([1, 2, 3], [3])
    assert b.encodings[-1] is a.encodings[-1], "encoded once for everyone"
    feed.unsubscribe(1)
    feed.unsubscribe(2)
    assert feed._timer is None, "no subscriber, no timer"
    await asyncio.sleep(0)
