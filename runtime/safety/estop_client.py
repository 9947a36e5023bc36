"""``edgeloop estop reset|stop``: an operator's reset or software stop, sent to a
running appliance over its TCP provider, with the appliance's answer."""

from __future__ import annotations

import asyncio

from edgeloop.net.client import Client
from edgeloop.safety.estop import Reset, Result, Stop

ANSWER_S = 5.0


async def ask(host: str, port: int, token: str, action: str, reason: str = "") -> Result:
    """Send ``action`` ("reset" or "stop") as an operator; the appliance's Result."""
    request: Reset | Stop = Reset() if action == "reset" else Stop(reason)
    client = Client(
        host,
        port,
        client_id="edgeloop-cli",
        token=token,
        role="operator",
        message_types=(Stop, Reset, Result),
    )
    async with asyncio.timeout(ANSWER_S), client:
        await client.send(request)
        while True:
            answer = await client.receive()
            if isinstance(answer, Result) and answer.action == action:
                return answer
