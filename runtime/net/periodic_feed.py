"""Io side: a message that every subscriber of a topic gets alike, looked for once a
period (the ``loop`` and ``audit`` topics of ``Subscribe``).

A dashboard asked for these over HTTP every second or two; each such request is a new
connection, about 0.6 ms of the io process (websockets' HTTP path), which 100 open pages
made a tenth of a core. Here ``build`` runs once a period for everyone, the message is
encoded once per wire format (``Session.send_shared``), and a subscriber whose send
queue is congested gets the newest one once it has room, not every one it missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edgeloop.net.session import Session


class PeriodicFeed:
    def __init__(self, period_s: float, build: Callable[[], object | None]) -> None:
        """``build``: the message now, or None when it has not changed since the last."""
        self.period_s = period_s
        self.build = build
        self.members: dict[int, Session] = {}
        self._behind: set[int] = set()  # not sent the newest yet
        self._latest: object | None = None
        self._encoded: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    def subscribe(self, session: Session) -> None:
        """The newest message at once, then each new one."""
        self.members[session.id] = session
        self._behind.add(session.id)
        if self._timer is None:
            self._tick()
        else:
            self._send()

    def unsubscribe(self, session_id: int) -> None:
        self.members.pop(session_id, None)
        self._behind.discard(session_id)
        if not self.members and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        for session_id in list(self.members):
            self.unsubscribe(session_id)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.period_s, self._tick)
        msg = self.build()
        if msg is not None:
            self._latest, self._encoded = msg, {}
            self._behind.update(self.members)
        self._send()

    def _send(self) -> None:
        if self._latest is None:
            return
        for session_id in list(self._behind):
            session = self.members[session_id]
            if not session.congested():
                session.send_shared(self._latest, self._encoded)
                self._behind.discard(session_id)
