"""The one error a GPIO line gives when it cannot be had or used."""

from __future__ import annotations


class GpioError(Exception):
    """A line could not be requested or driven; the message names the chip and offset
    and says why (``/dev/gpiochip0 line 17: no such GPIO chip``)."""
