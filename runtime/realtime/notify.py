"""sd_notify: tell systemd we are ready, alive, and what we are doing.

Written against the socket directly (it is one datagram per message): the protocol is
``KEY=VALUE`` lines sent to the unix datagram socket named by ``NOTIFY_SOCKET``, which
may be in the abstract namespace (a leading ``@``). Without ``NOTIFY_SOCKET`` (not run by
systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edgeloop.notify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            # Logged once: systemd going away must not flood the journal it writes to.
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), error)
                self._failed = True


def _socket_address(name: str) -> str | bytes | None:
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when not asked for."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process of the unit
    return int(usec) / 2e6
