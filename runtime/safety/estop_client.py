"""``edgeloop estop reset|stop``: an operator's reset or software stop, sent to a
running appliance over its TCP provider, with the appliance's answer."""

from __future__ import annotations

from edgeloop.net.operator_request import ask as ask_appliance
from edgeloop.safety.estop import Reset, Result, Stop


async def ask(host: str, port: int, token: str, action: str, reason: str = "") -> Result:
    """Send ``action`` ("reset" or "stop") as an operator; the appliance's Result."""
    request: Reset | Stop = Reset() if action == "reset" else Stop(reason)
    return await ask_appliance(
        host,
        port,
        token,
        request,
        answer=Result,
        matches=lambda result: result.action == action,
        message_types=(Stop, Reset, Result),
    )
