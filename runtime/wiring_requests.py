"""The wiring table of a running appliance, asked for over the network
(``edgeloop wiring --running``; the dashboard can ask the same).

``wiring.Request`` (viewer, operator or admin) asks for the rows from ``offset``; the
control process answers ``wiring.Page``: at most ``PAGE_ROWS`` rows, the total, and the
config file it runs. The table is the one the control process was built from
(``WiringTable``, made by ``App.from_config``), so it shows what runs, even when the
file on disk has changed since. Pages keep each answer far below the 64 KiB a record
may take between the processes, whatever the size of the config.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edgeloop.net import protocol
from edgeloop.net.client import Client
from edgeloop.net.network import Network, read_network
from edgeloop.net.registry import ProtocolError, message
from edgeloop.priority import Priority
from edgeloop.wiring import WiredField, WiringTable
from edgeloop.world import World

PAGE_ROWS = 50
ANSWER_S = 5.0


@message(
    name="wiring.Request",
    priority=Priority.NORMAL,
    senders=("viewer", "operator", "admin"),
    key="offset",
)
@dataclass
class WiringRequest:
    offset: int = 0


@message(name="wiring.Page", priority=Priority.NORMAL, senders=(), key="offset")
@dataclass
class WiringPage:
    offset: int
    total: int
    config: str  # the config file the control process runs
    fields: list[WiredField] = field(default_factory=list)


def answer_wiring_requests(world: World) -> None:
    """Each request answered with its page of the table."""
    network = world.resource(Network)
    wiring = world.get_resource(WiringTable) or WiringTable()
    for data in read_network(world, WiringRequest):
        start = max(data.message.offset, 0)
        rows = wiring.fields[start : start + PAGE_ROWS]
        page = WiringPage(start, len(wiring.fields), wiring.config, rows)
        network.send(world, data.connection, page)


async def ask(host: str, port: int, token: str, role: str) -> WiringPage:
    """The whole table of the appliance at ``host:port``, page by page, as one page
    (``TimeoutError`` if a page takes longer than ``ANSWER_S``)."""
    client = Client(
        host,
        port,
        client_id="edgeloop-cli",
        token=token,
        role=role,
        message_types=(WiringRequest, WiringPage),
    )
    async with client:
        whole = WiringPage(0, 1, "")
        while len(whole.fields) < whole.total:
            async with asyncio.timeout(ANSWER_S):
                await client.send(WiringRequest(len(whole.fields)))
                page = await _page(client, len(whole.fields))
            whole = WiringPage(0, page.total, page.config, whole.fields + page.fields)
            if not page.fields:
                break
        return whole


async def _page(client: Client, offset: int) -> WiringPage:
    while True:
        got = await client.receive()
        if isinstance(got, WiringPage) and got.offset == offset:
            return got
        if isinstance(got, protocol.Error):
            raise ProtocolError(got.code, got.detail)
