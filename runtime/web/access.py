"""Who may open an HTTP path of the WebSocket port: the one place a token is checked.

- ``PUBLIC`` (``/healthz``, ``/readyz``): anyone; a probe has no token.
- ``VIEWER`` (every other path): a token of ``network.tokens``, of any role (a viewer's
  is enough), as the cookie ``edgeloop_token`` (what a browser keeps) or as
  ``Authorization: Bearer TOKEN`` (which wins when both are sent).
- ``SCRAPE`` (``/metrics``): those, or ``network.metrics_token``, a scraper's token that
  opens nothing else.
- ``PERSON`` (the dashboard's ``/api/session``, ``/api/loop``, ``/api/audit``): a token of
  a viewer, operator or admin; a device's (a robot's, a PLC's) is not a person's.

No token: 401; a token that does not open the path: 403. Every known token is compared,
in constant time, so the time taken says nothing of which (or whether any) was close.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import Enum

from websockets.datastructures import Headers

COOKIE = "edgeloop_token"


class Access(Enum):
    PUBLIC = "public"
    VIEWER = "viewer"
    SCRAPE = "scrape"
    PERSON = "person"


PEOPLE = frozenset({"viewer", "operator", "admin"})
SCRAPER = "scraper"  # the role of network.metrics_token here


class Gate:
    """``roles``: each of ``network.tokens`` with its role; ``scrape_tokens``:
    ``network.metrics_token``, if any."""

    def __init__(self, roles: Mapping[str, str], scrape_tokens: list[str]) -> None:
        self._known = [(t.encode(), role) for t, role in roles.items()]
        self._known += [(t.encode(), SCRAPER) for t in scrape_tokens]

    def refusal(self, headers: Headers, access: Access) -> tuple[int, str] | None:
        """None if ``headers`` may open a path of ``access``; else the HTTP status and why."""
        if access is Access.PUBLIC:
            return None
        token = presented_token(headers)
        if token is None:
            return 401, f"a token is needed: the {COOKIE} cookie or Authorization: Bearer TOKEN"
        role = self._role(token)
        if role is None:
            return 403, "not a token of this appliance"
        if role == SCRAPER and access is not Access.SCRAPE:
            return 403, "network.metrics_token opens /metrics only"
        if access is Access.PERSON and role not in PEOPLE:
            return 403, "a viewer's, operator's or admin's token is needed, not a device's"
        return None

    def role(self, headers: Headers) -> str | None:
        """The role of the token ``headers`` carry (None: none, or not one of ours)."""
        token = presented_token(headers)
        return None if token is None else self._role(token)

    def _role(self, token: str) -> str | None:
        presented = token.encode()
        found: str | None = None
        for known, role in self._known:
            if hmac.compare_digest(presented, known) and found is None:
                found = role
        return found


def presented_token(headers: Headers) -> str | None:
    """The bearer token, else the ``edgeloop_token`` cookie's value; None if neither."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for header in headers.get_all("Cookie"):
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == COOKIE and value.strip('"'):
                return value.strip('"')
    return None
