"""Who may connect and what they may do: tokens mapped to roles.

``viewer`` reads, ``operator`` also sends commands, ``admin`` also changes settings;
``device`` is a robot or PLC (sends telemetry, takes commands). Which roles may send a
message type is declared with the type (``@message(..., senders=...)``).
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


class Authenticator:
    def __init__(self, grants: list[Grant]) -> None:
        self._grants = [(g.token.encode(), g.role) for g in grants]

    def role_for(self, token: str, asked: str) -> Role | None:
        """The role ``token`` grants if it allows ``asked``; None otherwise.

        Every grant is compared, matching or not, so the time taken does not say which
        (or whether any) token was close.
        """
        presented = token.encode()
        found: Role | None = None
        for secret, role in self._grants:
            if hmac.compare_digest(secret, presented) and found is None:
                found = role
        if found is None or found.value != asked:
            return None
        return found
