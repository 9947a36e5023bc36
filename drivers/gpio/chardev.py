"""Lines of a kernel GPIO chip (the character device), through libgpiod v2.

The PyPI ``gpiod`` 2.x bindings bundle the C library, so the device needs no system
package (Debian 12's python3-libgpiod is the old v1 API and is not used). The kernel
does the work: ``active_low``, ``bias`` and ``debounce_ms`` are line settings, edges
are queued in the kernel and read from the request's descriptor.
"""

from __future__ import annotations

import errno
from datetime import timedelta

import gpiod
from gpiod.line import Bias, Direction, Edge, Value

from edgeloop.drivers.gpio.config import GpioLine
from edgeloop.drivers.gpio.errors import GpioError

CONSUMER = "edgeloop"  # shown by `gpioinfo` as the line's user

BIASES = {
    "as_is": Bias.AS_IS,
    "pull_up": Bias.PULL_UP,
    "pull_down": Bias.PULL_DOWN,
    "disabled": Bias.DISABLED,
}

_REASONS = {
    errno.ENOENT: "no such GPIO chip",
    errno.ENODEV: "not a GPIO chip",
    errno.ENOTTY: "not a GPIO chip",
    errno.EACCES: "permission denied (is the user in the gpio group?)",
    errno.EPERM: "permission denied (is the user in the gpio group?)",
    errno.EBUSY: "the line is in use by another consumer (see gpioinfo)",
    errno.EINVAL: "the chip has no such line, or refuses these settings",
}


def input_settings(line: GpioLine) -> gpiod.LineSettings:
    return gpiod.LineSettings(
        direction=Direction.INPUT,
        edge_detection=Edge.BOTH,
        bias=BIASES[line.bias],
        active_low=line.active_low,
        debounce_period=timedelta(milliseconds=line.debounce_ms),
    )


def output_settings(line: GpioLine, initial: bool) -> gpiod.LineSettings:
    return gpiod.LineSettings(
        direction=Direction.OUTPUT,
        bias=BIASES[line.bias],
        active_low=line.active_low,
        output_value=_value(initial),
    )


class ChipInput:
    """An input line of a kernel chip: the request's descriptor is readable while the
    kernel holds edge events for it."""

    __slots__ = ("_line", "_request")

    def __init__(self, line: GpioLine) -> None:
        self._line = line
        self._request = _request(line, input_settings(line))

    def fileno(self) -> int:
        return self._request.fd

    def read_edges(self) -> int:
        edges = 0
        try:
            # the descriptor blocks on read: read only what is there
            while self._request.wait_edge_events(0):
                edges += len(self._request.read_edge_events())
        except OSError as error:  # a chip that went away (a USB GPIO expander unplugged)
            raise GpioError(f"{self._line}: {_reason(error)}") from None
        return edges

    def active(self) -> bool:
        try:
            return self._request.get_value(self._line.offset) is Value.ACTIVE
        except OSError as error:
            raise GpioError(f"{self._line}: {_reason(error)}") from None

    def close(self) -> None:
        if self._request:
            self._request.release()


class ChipOutput:
    __slots__ = ("_line", "_request")

    def __init__(self, line: GpioLine, initial: bool) -> None:
        self._line = line
        self._request = _request(line, output_settings(line, initial))

    def set(self, active: bool) -> None:
        try:
            self._request.set_value(self._line.offset, _value(active))
        except OSError as error:
            raise GpioError(f"{self._line}: {_reason(error)}") from None

    def close(self) -> None:
        if self._request:
            self._request.release()


def open_input(line: GpioLine) -> ChipInput:
    return ChipInput(line)


def open_output(line: GpioLine, initial: bool) -> ChipOutput:
    return ChipOutput(line, initial)


def _request(line: GpioLine, settings: gpiod.LineSettings) -> gpiod.LineRequest:
    path = line.chip_path
    try:
        return gpiod.request_lines(str(path), consumer=CONSUMER, config={line.offset: settings})
    except OSError as error:
        raise GpioError(f"{path} line {line.offset}: {_reason(error)}") from None
    except ValueError as error:  # the bindings' own checks, e.g. an offset past the chip's
        raise GpioError(f"{path} line {line.offset}: {error}") from None


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno or 0, error.strerror or str(error))


def _value(active: bool) -> Value:
    return Value.ACTIVE if active else Value.INACTIVE
