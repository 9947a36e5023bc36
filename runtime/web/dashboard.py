"""The dashboard's paths on the WebSocket port: the page (``/``, ``/static/...``) for
anyone, since a browser must load it to ask for a token and it holds no data; its
``/api/...`` paths for a person's token (viewer, operator, admin; cookie or header),
checked by the one ``Gate`` of every HTTP path (``access``).

- ``/api/session``: the role the token grants (the page says Hello with it).
- ``/api/loop``: the control loop (``loop_status``).
- ``/api/audit?n=N``: the audit log's last entries (``audit_tail``).

The trends (``/api/fields``, ``/api/trend``) are ``HttpFace``'s, like ``/metrics``; the
live World, alarms and commands go over ``/ws`` like any client's.
"""

from __future__ import annotations

import http
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from edgeloop.safety.audit_chain import FILE_NAME as AUDIT_FILE
from edgeloop.web import audit_tail
from edgeloop.web.access import Access, Gate
from edgeloop.web.loop_status import LoopStatusReader
from edgeloop.web.static_files import INDEX, StaticFiles

AUDIT_DEFAULT = 20
STATIC = "/static/"
OWN_API = frozenset({"/api/session", "/api/loop", "/api/audit"})

Handler = Callable[[Request], Response | Awaitable[Response] | None]


class Dashboard:
    def __init__(self, loop: LoopStatusReader, *, gate: Gate, state_dir: Path) -> None:
        self.static = StaticFiles()
        self.loop = loop
        self.gate = gate
        self.audit = state_dir / AUDIT_FILE

    def __call__(self, request: Request) -> Response | None:
        path, _, query_text = request.path.partition("?")
        if path == "/":
            return self.static.response(INDEX)
        if path.startswith(STATIC):  # the page's files are public, and so is their absence
            found = self.static.response(path[len(STATIC) :])
            return found if found is not None else _json(404, {"error": "no such file"})
        if path not in OWN_API:
            return None
        refused = self.gate.refusal(request.headers, Access.PERSON)
        if refused is not None:
            status, why = refused
            return _json(status, {"error": why})
        query = dict(parse_qsl(query_text))
        if path == "/api/session":
            return _json(200, {"role": self.gate.role(request.headers)})
        if path == "/api/loop":
            return _json(200, msgspec.to_builtins(self.loop.read()))
        count = int(query["n"]) if query.get("n", "").isdigit() else AUDIT_DEFAULT
        return _json(200, {"entries": audit_tail.tail(self.audit, count)})


def first_of(*handlers: Handler) -> Handler:
    """One handler: the first answer of ``handlers``, in order (None: 404)."""

    def handle(request: Request) -> Response | Awaitable[Response] | None:
        for handler in handlers:
            response = handler(request)
            if response is not None:
                return response
        return None

    return handle


def _json(status: int, body: object) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
         ("Cache-Control", "no-store")]
    )  # fmt: skip
    return Response(status, http.HTTPStatus(status).phrase, headers, data)
