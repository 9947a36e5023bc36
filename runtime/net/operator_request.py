"""One operator request to a running appliance over its TCP provider, and its answer:
what ``edgeloop estop reset|stop`` and ``edgeloop alarm ack`` send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeVar

from edgeloop.net.client import Client

T = TypeVar("T")

ANSWER_S = 5.0


async def ask(
    host: str,
    port: int,
    token: str,
    request: object,
    *,
    answer: type[T],
    matches: Callable[[T], bool],
    message_types: Iterable[type],
) -> T:
    """Send ``request`` as an operator; the first ``answer`` that ``matches`` it
    (``TimeoutError`` after ``ANSWER_S``)."""
    client = Client(
        host,
        port,
        client_id="edgeloop-cli",
        token=token,
        role="operator",
        message_types=tuple(message_types),
    )
    async with asyncio.timeout(ANSWER_S), client:
        await client.send(request)
        while True:
            got = await client.receive()
            if isinstance(got, answer) and matches(got):
                return got
