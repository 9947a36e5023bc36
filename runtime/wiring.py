"""Who writes and who reads each World field, as the config says (LinuxCNC HAL's rule).

Every config section that moves values in or out of World fields declares it
(``ConfigSection.wiring``): a driver's input point writes its field and an output point
reads it, a Modbus-server point is read and, if writable, written by its clients, a
block reads its inputs and writes its output, a simulator writes what it simulates.
A field has exactly one writer; a second is a config error naming both config lines
(``conflicts``), found when the config is loaded, so ``edgeloop check-config`` and
``edgeloop run`` refuse it alike. ``edgeloop wiring`` prints the table (``table``).

A claim's entity may be ``*``: any entity (robots are named by the id they send, so
their fields are known by component and field only). It clashes with a writer of the
same component and field on any entity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ANY_ENTITY = "*"

Access = Literal["write", "read"]
Bound = bool | float | None


@dataclass(frozen=True, slots=True)
class Claim:
    """One section's write or read of one field, and the key path that says so."""

    field: str  # entity.Component.field
    access: Access
    by: str  # who, as messages name it: "modbus plc1 points[2]", "blocks.pid 'tank1'"
    how: str  # what kind of writer or reader: "driver input", "Modbus-server write", ...
    at: tuple[Any, ...]  # the key path in the config (a section's own claims: in the section)
    min: float | None = None  # what a write to the field must stay within
    max: float | None = None
    safe_value: Bound = None  # what the field's device gets while the safe state holds
    unit: str = ""  # the engineering unit the config gives the field's values in


def write(target: str, by: str, how: str, at: tuple[Any, ...]) -> Claim:
    return Claim(target, "write", by, how, at)


def read(target: str, by: str, how: str, at: tuple[Any, ...]) -> Claim:
    return Claim(target, "read", by, how, at)


@dataclass
class WiredField:
    """A row of the wiring table: a field, its writer, its readers, its bounds (also on
    the wire, in ``wiring.Page``)."""

    field: str
    writer: str  # "" when nothing in the config writes it
    writer_at: str  # file:line:column of the writer's config line
    readers: list[str]
    min: float | None = None
    max: float | None = None
    safe_value: Any = None  # bool, float or None: the wire form has no such union
    unit: str = ""  # the first unit a claim of the field gives (a dashboard shows it)


@dataclass
class WiringTable:
    """Resource: the wiring of the config an App was built from (``App.from_config``)."""

    config: str = ""
    fields: list[WiredField] = field(default_factory=list)


@dataclass(slots=True)
class _Row:
    writer: Claim | None = None
    readers: list[Claim] = field(default_factory=list)
    bounded: list[Claim] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


Where = Callable[[tuple[Any, ...]], str]


def conflicts(claims: Iterable[Claim], where: Where) -> list[tuple[Claim, str]]:
    """Each write to a field someone else writes already: the second claim and the
    message naming both writers and the first one's config line."""
    writers: dict[str, Claim] = {}
    found = []
    for claim in claims:
        if claim.access != "write":
            continue
        first = writers.get(claim.field) or _any_entity_writer(writers, claim.field)
        if first is None:
            writers[claim.field] = claim
            continue
        found.append(
            (
                claim,
                f"{claim.field} is written by {claim.by} ({claim.how}) and by {first.by} "
                f"({first.how}, {where(first.at)}); a field has one writer: remove one, "
                "or point one at another field",
            )
        )
    return found


def _any_entity_writer(writers: dict[str, Claim], target: str) -> Claim | None:
    entity, _, rest = target.partition(".")
    if entity == ANY_ENTITY:
        return next((c for f, c in writers.items() if f.partition(".")[2] == rest), None)
    return writers.get(f"{ANY_ENTITY}.{rest}")


def table(claims: Sequence[Claim], where: Where) -> list[WiredField]:
    """Every claimed field, sorted by name, with its writer, readers and bounds."""
    rows: dict[str, _Row] = {}
    for claim in claims:
        row = rows.setdefault(claim.field, _Row())
        row.claims.append(claim)
        if claim.access == "write" and row.writer is None:
            row.writer = claim
        elif claim.access == "read":
            row.readers.append(claim)
        if claim.min is not None or claim.max is not None or claim.safe_value is not None:
            row.bounded.append(claim)
    wired = []
    for name in sorted(rows):
        row = rows[name]
        writer = row.writer
        wired.append(
            WiredField(
                field=name,
                writer="" if writer is None else f"{writer.by} ({writer.how})",
                writer_at="" if writer is None else where(writer.at),
                readers=[f"{r.by} ({r.how})" for r in row.readers],
                min=_tightest(row.bounded, "min", max),
                max=_tightest(row.bounded, "max", min),
                safe_value=next(
                    (c.safe_value for c in row.bounded if c.safe_value is not None), None
                ),
                unit=next((c.unit for c in row.claims if c.unit), ""),
            )
        )
    return wired


def _tightest(
    claims: list[Claim], key: str, pick: Callable[[Iterable[float]], float]
) -> float | None:
    """A field written to several devices takes the bounds of all of them."""
    values = [getattr(c, key) for c in claims if getattr(c, key) is not None]
    return pick(values) if values else None


def render(fields: Sequence[WiredField]) -> str:
    """The wiring table as text, one field a line, for a terminal."""
    head = ("FIELD", "WRITER", "READERS", "MIN", "MAX", "SAFE")
    lines = [
        (
            f.field,
            f"{f.writer} at {f.writer_at}" if f.writer_at else f.writer or "-",
            ", ".join(f.readers) or "-",
            _shown(f.min),
            _shown(f.max),
            _shown(f.safe_value),
        )
        for f in fields
    ]
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in [head, *lines]
    )


def _shown(value: Bound) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}"
