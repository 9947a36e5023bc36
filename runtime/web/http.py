"""The plain HTTP paths of the WebSocket port, each with who may open it (``access``):

- ``/healthz``, ``/readyz``: for anyone (``health``);
- ``/metrics``: the Prometheus text format (``metrics``), for a token or the scrape token;
- ``/api/fields``, ``/api/trend``: the data log's fields and their trends (``trend``);
- any other path: a token first, then 404.

docs/http.md has the endpoints, the auth and the metric families.
"""

from __future__ import annotations

import http
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.web import health, metrics
from edgeloop.web.access import Access, Gate
from edgeloop.web.trend import Answer, Trends

Handler = Callable[[str], Response | Awaitable[Response]]  # takes the query string


class HttpFace:
    """``WebSocketProvider.http_handler``: one of the paths above, or None (404)."""

    def __init__(
        self,
        heartbeats: Heartbeats,
        mirror: Callable[[], Mapping[tuple[int, str], dict[str, Any]]],
        connections: Callable[[], Mapping[str, int]],
        network: Callable[[], Mapping[str, Counter[str]]],
        *,
        gate: Gate,
        trends: Trends,
        stall_s: float,
    ) -> None:
        self.heartbeats = heartbeats
        self.mirror = mirror
        self.gate = gate
        self.trends = trends
        self.stall_s = stall_s
        self.registry = metrics.registry(
            metrics.ApplianceCollector(heartbeats, mirror, connections, network)
        )
        self.routes: dict[str, tuple[Access, Handler]] = {
            "/healthz": (Access.PUBLIC, self._healthz),
            "/readyz": (Access.PUBLIC, self._readyz),
            "/metrics": (Access.SCRAPE, self._metrics),
            "/api/fields": (Access.VIEWER, self._fields),
            "/api/trend": (Access.VIEWER, self._trend),
        }

    def __call__(self, request: Request) -> Response | Awaitable[Response] | None:
        path, _, query = request.path.partition("?")
        access, handler = self.routes.get(path, (Access.VIEWER, None))
        refused = self.gate.refusal(request.headers, access)
        if refused is not None:
            status, why = refused
            return _json(status, {"error": why})
        return None if handler is None else handler(query)

    def _healthz(self, _query: str) -> Response:
        status, body = health.health_body(self.heartbeats, self.mirror(), self.stall_s)
        return _json(status, body)

    def _readyz(self, _query: str) -> Response:
        ok, why = health.ready(self.heartbeats, self.stall_s)
        return _json(200 if ok else 503, {"ready": ok, "detail": why})

    def _metrics(self, _query: str) -> Response:
        return _response(200, metrics.render(self.registry), metrics.CONTENT_TYPE)

    async def _fields(self, _query: str) -> Response:
        return _answer(await self.trends.fields())

    async def _trend(self, query: str) -> Response:
        return _answer(await self.trends.trend(query))

    def close(self) -> None:
        self.trends.close()


def _answer(answer: Answer) -> Response:
    return _json(*answer)


def _json(status: int, body: object) -> Response:
    return _response(status, json.dumps(body).encode(), "application/json")


def _response(status: int, data: bytes, content_type: str) -> Response:
    phrase = http.HTTPStatus(status).phrase
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(data))),
         ("Cache-Control", "no-store")]
    )  # fmt: skip
    return Response(status, phrase, headers, data)
