"""Who may connect and what they may do: tokens mapped to roles and client ids.

``viewer`` reads, ``operator`` also sends commands, ``admin`` also changes settings;
``device`` is a robot or PLC (sends telemetry, takes commands). Which roles may send a
message type is declared with the type (``@message(..., senders=...)``).

A token may be bound to client ids: a connection with it must say Hello as one of them
and may speak only for them (the entities its messages name, e.g. a robot id), and no
connection with another token may use them.
Tokens are compared in constant time, so response timing does not leak a token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum


class Role(Enum):
    VIEWER = "viewer"
    DEVICE = "device"
    OPERATOR = "operator"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Grant:
    token: str
    role: Role
    # The client ids the token is for; None: any not bound to another token.
    client_ids: frozenset[str] | None = None


class Authenticator:
    def __init__(self, grants: list[Grant]) -> None:
        self._grants = [(g.token.encode(), g) for g in grants]
        # Every id some token is bound to: no other token may use them.
        self.bound = frozenset(i for g in grants if g.client_ids is not None for i in g.client_ids)

    def grant_for(self, token: str, asked: str) -> Grant | None:
        """The grant of ``token`` if it allows role ``asked``; None otherwise.

        Every grant is compared, matching or not, so the time taken does not say which
        (or whether any) token was close.
        """
        presented = token.encode()
        found: Grant | None = None
        for secret, grant in self._grants:
            if hmac.compare_digest(secret, presented) and found is None:
                found = grant
        if found is None or found.role.value != asked:
            return None
        return found

    def may_use(self, grant: Grant, client_id: str) -> bool:
        """Whether a connection with ``grant`` may say Hello as, or speak for, ``client_id``."""
        if grant.client_ids is not None:
            return client_id in grant.client_ids
        return client_id not in self.bound
