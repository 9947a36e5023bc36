"""A running appliance answers `wiring.Request` with its wiring table, a page at a time,
so that no answer outgrows a record between the processes whatever the config's size."""

from __future__ import annotations

from typing import Any

import msgpack

from edgeloop.app import App
from edgeloop.net.network import NET_EVENT, NET_MESSAGE, NET_SEND
from edgeloop.net.plugin import NetworkConfig, NetworkPlugin
from edgeloop.net.registry import Registry
from edgeloop.realtime.io_link import IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Record
from edgeloop.safety.systems import add_safe_state
from edgeloop.wiring import WiredField, WiringTable
from edgeloop.wiring_requests import PAGE_ROWS, WiringPage, WiringRequest

VIEWER = 7
ROWS = 2 * PAGE_ROWS + 3


def _app() -> tuple[App, IoLink]:
    app = App()
    link = IoLink()
    app.insert_resource(Registry([WiringRequest, WiringPage]))
    rows = [WiredField(f"e{i}.C.f", "w", f"c.yaml:{i}:1", [], max=float(i)) for i in range(ROWS)]
    app.insert_resource(WiringTable("c.yaml", rows))
    add_safe_state(app)
    app.add_plugin(IoLinkPlugin(link))
    app.add_plugin(NetworkPlugin(NetworkConfig()))
    app.startup()
    link.inbox.append(Record(NET_EVENT, "v", 1, ["tcp", VIEWER, True, "peer", "viewer"]))
    app.run_for(1)
    return app, link


def _pages(app: App, link: IoLink, offsets: list[int]) -> list[dict[str, Any]]:
    for offset in offsets:
        asked = ["tcp", VIEWER, "wiring.Request", {"offset": offset}]
        link.inbox.append(Record(NET_MESSAGE, "v", 1, asked))
    app.run_for(1)
    (outbox,) = link.outboxes
    pages = []
    for raw in outbox._latest.values():
        topic, _, _, payload = msgpack.unpackb(raw)
        if topic == NET_SEND and payload[2] == "wiring.Page":
            pages.append(payload[4])
    outbox._latest.clear()
    return pages


def test_the_table_comes_in_pages_that_add_up_to_it() -> None:
    app, link = _app()
    pages = _pages(app, link, [0, PAGE_ROWS, 2 * PAGE_ROWS])
    assert [(p["offset"], p["total"], len(p["fields"])) for p in pages] == [
        (0, ROWS, PAGE_ROWS),
        (PAGE_ROWS, ROWS, PAGE_ROWS),
        (2 * PAGE_ROWS, ROWS, 3),
    ]
    every = [row for page in pages for row in page["fields"]]
    assert [row["field"] for row in every] == [f"e{i}.C.f" for i in range(ROWS)]
    last = ROWS - 1
    assert every[-1] == dict(field=f"e{last}.C.f", writer="w", writer_at=f"c.yaml:{last}:1",
                             readers=[], min=None, max=float(last), safe_value=None,
                             unit="")  # fmt: skip
    assert {page["config"] for page in pages} == {"c.yaml"}


def test_an_offset_past_the_end_is_an_empty_page() -> None:
    app, link = _app()
    (page,) = _pages(app, link, [ROWS + 10])
    assert (page["offset"], page["total"], page["fields"]) == (ROWS + 10, ROWS, [])
