"""Who is asking, on the dashboard's HTTP paths: a token from the ``edgeloop_token``
cookie (what a browser keeps) or ``Authorization: Bearer`` (what a tool sends), and the
role it grants. ``device`` tokens are a robot's or PLC's, not a person's: refused here.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

from websockets.datastructures import Headers

COOKIE = "edgeloop_token"
PEOPLE = frozenset({"viewer", "operator", "admin"})


def presented(headers: Headers) -> str:
    """The token the request carries ("" for none): the header first, then the cookie."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("Cookie", ""))
    except CookieError:
        return ""
    morsel = cookie.get(COOKIE)
    return "" if morsel is None else morsel.value


def role_of(token: str, roles: Mapping[str, str]) -> str | None:
    """The role ``token`` grants a person, or None. Every token is compared, so the time
    taken says nothing of which (or whether any) was close."""
    given = token.encode()
    found = None
    for known, role in roles.items():
        if hmac.compare_digest(given, known.encode()) and found is None:
            found = role
    return found if found in PEOPLE else None
