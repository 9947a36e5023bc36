"""Keeping a provider's port open: bind, and while the address cannot be had (another
process holds it, the interface is not up yet) retry with backoff, reporting each change.

An appliance whose robot port is taken still runs its control loop and safe state, so a
failed bind is not fatal: it is retried, and reported (``on_change``) so that it shows
as an alarm, as the listener's health and on the supervisor's status line until the
port frees and the listener binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import ssl
from collections.abc import Callable
from typing import Protocol

from edgeloop.drivers.health import Backoff
from edgeloop.logs import every_power_of_ten

log = logging.getLogger("edgeloop.net")

# A freed port is noticed within this, while a port held for good costs a try per 5 s.
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0


class Provider(Protocol):
    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False
    ) -> int: ...


class Listener:
    """One provider's listening socket at ``host:port``."""

    def __init__(
        self,
        name: str,
        provider: Provider,
        host: str,
        port: int,
        on_change: Callable[[Listener], None],
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.host = host
        self.port = port  # the bound port once listening (port 0 asks for any)
        self.address = f"{host}:{port}"
        self.listening = False
        self.error = ""  # why it is not listening
        self.failures = 0  # bind attempts that failed
        self._on_change = on_change
        self._tls = tls
        self._reuse_port = reuse_port
        self._backoff = backoff or Backoff(RETRY_INITIAL_S, RETRY_MAX_S)
        self._retrying: asyncio.Task[None] | None = None

    @property
    def problem(self) -> str:
        """What the status line and the alarm say while it is not listening."""
        return f"{self.name} {self.address} not listening ({self.error})"

    async def start(self) -> None:
        """Try to bind now; on failure keep trying in the background."""
        if not await self._bind():
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        while not await self._bind():
            await asyncio.sleep(self._backoff.next_delay())

    async def _bind(self) -> bool:
        try:
            self.port = await self.provider.start(
                self.host, self.port, tls=self._tls, reuse_port=self._reuse_port
            )
        except OSError as error:
            self.failures += 1
            reason = _reason(error)
            if every_power_of_ten(self.failures):
                log.error(
                    "%s: cannot listen on %s (%s; %d attempts so far); retrying",
                    self.name,
                    self.address,
                    reason,
                    self.failures,
                )
            if reason != self.error or self.failures == 1:
                self.error = reason
                self._on_change(self)
            return False
        if self.failures:
            log.warning(
                "%s: listening on %s after %d failed attempts",
                self.name,
                self.address,
                self.failures,
            )
        self.listening = True
        self.error = ""
        self._backoff.reset()
        self._on_change(self)
        return True

    async def stop(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying


def _reason(error: OSError) -> str:
    """``address in use`` rather than ``[Errno 98] error while attempting to bind...``."""
    if error.errno == errno.EADDRINUSE:
        return "address in use"
    if error.errno is not None:
        return os.strerror(error.errno).lower()
    return str(error)
