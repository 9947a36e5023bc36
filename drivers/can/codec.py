"""CAN frames: ids as table keys, receive filters, the values a tx frame starts with,
and the controller state SocketCAN error frames report."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import can
from cantools.database.can import Message

# SocketCAN error frames (linux/can/error.h): the class is in the id, details in data.
CAN_ERR_CRTL = 0x004
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
CAN_ERR_CRTL_RX_PASSIVE = 0x10  # data[1]
CAN_ERR_CRTL_TX_PASSIVE = 0x20
CAN_ERR_CRTL_ACTIVE = 0x40

EXTENDED = 1 << 31  # in frame keys: 0x181 standard and 0x181 extended are two frames


def initial_values(message: Message) -> dict[str, float]:
    """What a tx message carries before the control loop writes: each signal's initial
    value, else 0 (or its minimum or maximum, when 0 is out of range)."""
    values: dict[str, float] = {}
    for signal in message.signals:
        value = signal.initial if isinstance(signal.initial, (int, float)) else 0
        if signal.minimum is not None and value < signal.minimum:
            value = signal.minimum
        if signal.maximum is not None and value > signal.maximum:
            value = signal.maximum
        values[signal.name] = value
    return values


def frame_key(frame_id: int, extended: bool) -> int:
    return frame_id | EXTENDED if extended else frame_id


def receive_filters(messages: Sequence[Message]) -> list[can.typechecking.CanFilter]:
    """python-can ``can_filters`` that let exactly these frames through."""
    filters: list[can.typechecking.CanFilter] = []
    for message in messages:
        mask = 0x1FFFFFFF if message.is_extended_frame else 0x7FF
        filters.append(
            {"can_id": message.frame_id, "can_mask": mask, "extended": message.is_extended_frame}
        )
    return filters


class BusHealth(enum.Enum):
    ACTIVE = "error-active"
    PASSIVE = "error-passive"
    OFF = "bus-off"


def bus_health_of(frame: can.Message) -> BusHealth | None:
    """The controller state an error frame reports, if it reports one."""
    kind = frame.arbitration_id
    if kind & CAN_ERR_BUSOFF:
        return BusHealth.OFF
    if kind & CAN_ERR_RESTARTED:
        return BusHealth.ACTIVE
    if kind & CAN_ERR_CRTL and len(frame.data) > 1:
        status = frame.data[1]
        if status & (CAN_ERR_CRTL_RX_PASSIVE | CAN_ERR_CRTL_TX_PASSIVE):
            return BusHealth.PASSIVE
        if status & CAN_ERR_CRTL_ACTIVE:
            return BusHealth.ACTIVE
    return None
