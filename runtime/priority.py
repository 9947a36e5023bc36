"""Message priorities, shared by the wire protocol and the io <-> control channel."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """CRITICAL and HIGH are never dropped (the sender is paused instead); NORMAL is
    conflated to the latest value per key; LOW is dropped first under pressure."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
