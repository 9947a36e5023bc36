"""The plain HTTP paths of the WebSocket port: ``/healthz`` and ``/readyz`` for anyone
(a probe has no token), ``/metrics`` for a configured token.

``/metrics`` takes any of ``network.tokens`` (any role) or ``network.metrics_token``
(a scraper's, good for nothing else), as ``Authorization: Bearer TOKEN``; without one
it answers 401, with a wrong one 403.
"""

from __future__ import annotations

import hmac
import http
import json
from collections.abc import Callable, Mapping
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from edgeloop.realtime.heartbeat import Heartbeats
from edgeloop.web import health, metrics


class HttpFace:
    """``WebSocketProvider.http_handler``: one of the paths above, or None (404)."""

    def __init__(
        self,
        heartbeats: Heartbeats,
        mirror: Callable[[], Mapping[tuple[int, str], dict[str, Any]]],
        connections: Callable[[], Mapping[str, int]],
        *,
        tokens: list[str],
        stall_s: float,
    ) -> None:
        self.heartbeats = heartbeats
        self.mirror = mirror
        self.tokens = [t.encode() for t in tokens]
        self.stall_s = stall_s
        self.registry = metrics.registry(
            metrics.ApplianceCollector(heartbeats, mirror, connections)
        )

    def __call__(self, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            status, body = health.health_body(self.heartbeats, self.mirror(), self.stall_s)
            return _json(status, body)
        if path == "/readyz":
            ok, why = health.ready(self.heartbeats, self.stall_s)
            return _json(200 if ok else 503, {"ready": ok, "detail": why})
        if path == "/metrics":
            refused = self._refusal(request.headers)
            if refused is not None:
                return refused
            return _response(200, metrics.render(self.registry), metrics.CONTENT_TYPE)
        return None

    def _refusal(self, headers: Headers) -> Response | None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _json(401, {"error": "a token is needed: Authorization: Bearer TOKEN"})
        presented = token.strip().encode()
        # Every token compared, so the time taken says nothing of which was close.
        matches = [hmac.compare_digest(presented, known) for known in self.tokens]
        if not any(matches):
            return _json(403, {"error": "not a token of this appliance"})
        return None


def _json(status: int, body: object) -> Response:
    return _response(status, json.dumps(body).encode(), "application/json")


def _response(status: int, data: bytes, content_type: str) -> Response:
    phrase = http.HTTPStatus(status).phrase
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(data))),
         ("Cache-Control", "no-store")]
    )  # fmt: skip
    return Response(status, phrase, headers, data)
