"""Device health: the state a driver keeps per device, and the ``DeviceHealth`` component.

The io side keeps a ``HealthTracker`` per device and sends its snapshot to the control
process whenever it changes; the control side stores it as the device entity's
``DeviceHealth`` component, where control logic and the dashboard read it.

    connecting --first good exchange--> online
    online --error--> degraded --errors in a row >= offline_after--> offline
    degraded/offline --good exchange--> online

Retries after errors wait with exponential backoff and jitter (``Backoff``): a dead
device is asked less and less often, so on a shared line it stops eating the time of
the healthy ones, and a fleet of appliances does not retry in lockstep.
"""

from __future__ import annotations

import random
import time
from typing import Any, Literal

from edgeloop.component import Component

HealthState = Literal["connecting", "online", "degraded", "offline"]
ErrorKind = Literal["timeout", "exception", "garbage", "disconnect", "write", "bus"]


class DeviceHealth(Component):
    """How a field device is doing, as its driver last reported."""

    driver: str = ""
    state: str = "connecting"
    last_good_read: float = 0.0  # unix time of the last good exchange, 0 before any
    consecutive_errors: int = 0
    errors: tuple[tuple[str, int], ...] = ()  # count by kind, sorted by kind
    last_error: str = ""
    rtt_ms: float = 0.0  # round trip of the last good exchange
    requests_per_cycle: int = 0  # requests one poll of every point takes (Modbus)

    def error_count(self, kind: str) -> int:
        return dict(self.errors).get(kind, 0)


class Backoff:
    """Delays for retries: ``initial_s`` doubling up to ``max_s``, each with +-``jitter``
    (a fraction) drawn at random."""

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.attempts = 0


class HealthTracker:
    """The io side's health of one device; ``changed`` says a new snapshot is due."""

    def __init__(self, driver: str, offline_after: int = 3) -> None:
        self.driver = driver
        self.offline_after = offline_after
        self.state: HealthState = "connecting"
        self.last_good_read = 0.0
        self.consecutive_errors = 0
        self.errors: dict[str, int] = {}
        self.last_error = ""
        self.rtt_ms = 0.0
        self.requests_per_cycle = 0
        self.changed = True

    @property
    def usable(self) -> bool:
        """True while values read from the device can be trusted as current."""
        return self.state in ("online", "degraded")

    def good(self, rtt_s: float, now: float | None = None) -> None:
        self.last_good_read = time.time() if now is None else now
        self.rtt_ms = rtt_s * 1000.0
        # last_good_read moves every poll: a snapshot per poll would be news-free
        # traffic, so only a change of state marks one (the publisher also sends one
        # now and then, which carries last_good_read and rtt_ms).
        if self.state != "online" or self.consecutive_errors:
            self.state = "online"
            self.consecutive_errors = 0
            self.changed = True

    def error(self, kind: ErrorKind, detail: str) -> None:
        self.consecutive_errors += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = f"{kind}: {detail}"[:200]
        if kind == "disconnect" or self.consecutive_errors >= self.offline_after:
            self.state = "offline"
        elif self.state == "online":
            self.state = "degraded"
        self.changed = True

    def set_requests_per_cycle(self, count: int) -> None:
        if count != self.requests_per_cycle:
            self.requests_per_cycle = count
            self.changed = True

    def snapshot(self) -> dict[str, Any]:
        self.changed = False
        return {
            "driver": self.driver,
            "state": self.state,
            "last_good_read": self.last_good_read,
            "consecutive_errors": self.consecutive_errors,
            "errors": sorted(self.errors.items()),
            "last_error": self.last_error,
            "rtt_ms": self.rtt_ms,
            "requests_per_cycle": self.requests_per_cycle,
        }
