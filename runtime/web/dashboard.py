"""The dashboard's paths on the WebSocket port: the page (``/``, ``/static/...``) for
anyone, since a browser must load it to ask for a token and it holds no data; the
``/api/...`` paths for a person's token (viewer, operator, admin; cookie or header).

- ``/api/session``: the role the token grants (the page says Hello with it).
- ``/api/loop``: the control loop (``loop_status``).
- ``/api/audit?n=N``: the audit log's last entries (``audit_tail``).
- ``/api/fields``, ``/api/trend?...``: the data log (``trend``).

The live World, alarms and commands go over ``/ws`` like any client's.
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.safety.audit_chain import FILE_NAME as AUDIT_FILE
from edgeloop.web import audit_tail, token_check, trend
from edgeloop.web.loop_status import LoopStatus
from edgeloop.web.static_files import INDEX, StaticFiles

AUDIT_DEFAULT = 20
STATIC = "/static/"

Handler = Callable[[Request], Response | None]


class Dashboard:
    def __init__(
        self,
        heartbeats: Heartbeats,
        *,
        roles: Mapping[str, str],
        state_dir: Path,
        data_log: Path,
    ) -> None:
        self.static = StaticFiles()
        self.loop = LoopStatus(heartbeats)
        self.roles = dict(roles)
        self.audit = state_dir / AUDIT_FILE
        self.data_log = data_log

    def __call__(self, request: Request) -> Response | None:
        path, _, query_text = request.path.partition("?")
        if path == "/":
            return self.static.response(INDEX)
        if path.startswith(STATIC):
            return self.static.response(path[len(STATIC) :])
        if not path.startswith("/api/"):
            return None
        role = token_check.role_of(token_check.presented(request.headers), self.roles)
        if role is None:
            return _json(401, {"error": "a viewer, operator or admin token is needed"})
        query = dict(parse_qsl(query_text))
        if path == "/api/session":
            return _json(200, {"role": role})
        if path == "/api/loop":
            return _json(200, self.loop.body())
        if path == "/api/audit":
            count = int(query["n"]) if query.get("n", "").isdigit() else AUDIT_DEFAULT
            return _json(200, {"entries": audit_tail.tail(self.audit, count)})
        if path == "/api/fields":
            return _json(200, {"fields": trend.fields(self.data_log)})
        if path == "/api/trend":
            try:
                return _json(200, trend.trend(self.data_log, query))
            except trend.BadQuery as error:
                return _json(400, {"error": str(error)})
        return None


def first_of(*handlers: Handler) -> Handler:
    """One handler: the first answer of ``handlers``, in order (None: 404)."""

    def handle(request: Request) -> Response | None:
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
