"""Which config key uses each GPIO line of an App: one line, one job, across sections.

Each section's own model already refuses a line named twice inside it; a line named by
two sections (an e-stop input that is also a ``gpio`` point) is seen here, when the
plugins build, before anything opens a line: opening it second would fail busy, at
start or later, in whichever section came second.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgeloop.app import App
from edgeloop.drivers.gpio.config import GpioLine, chip_key


class GpioClaims:
    """Resource: the GPIO lines the App's sections use, and where each is named."""

    def __init__(self) -> None:
        self.users: dict[tuple[str, int], str] = {}


def claim_lines(app: App, lines: Iterable[tuple[str, GpioLine]]) -> None:
    """Record ``(where, line)`` pairs; ``ValueError`` naming both keys for a line that
    another section named already."""
    claims = app.world.get_resource(GpioClaims)
    if claims is None:
        claims = GpioClaims()
        app.insert_resource(claims)
    for where, line in lines:
        place = (chip_key(line.chip), line.offset)
        other = claims.users.setdefault(place, where)
        if other != where:
            raise ValueError(f"{where}: {line} is also {other}: one line, one job")
