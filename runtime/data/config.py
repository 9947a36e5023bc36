"""The ``data_log`` config section: what is logged, where, how durably, for how long."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated

from pydantic import Field

from edgeloop.config import Config, Section
from edgeloop.data.store import Retention, Synchronous

Pattern = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.*?\[\]-]+$")]
NonNegative = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]


class FieldRule(Section):
    """How the fields ``match`` names (``entity.Component.field``, with ``*`` and ``?``)
    are logged: a change smaller than ``deadband`` is not, nor one sooner than
    ``min_interval_s`` after the last logged."""

    match: Pattern
    deadband: NonNegative = 0.0
    min_interval_s: NonNegative = 0.0


class RetentionConfig(Section):
    raw_days: Annotated[float, Field(gt=0, le=3650, strict=True)] = 7.0
    minute_days: Annotated[float, Field(gt=0, le=36500, strict=True)] = 90.0
    hour_days: Annotated[float, Field(gt=0, le=36500, strict=True)] = 3650.0
    max_mb: Annotated[int, Field(ge=1, le=1 << 20, strict=True)] = 1024

    def retention(self) -> Retention:
        return Retention(self.raw_days, self.minute_days, self.hour_days, self.max_mb << 20)


class DataLogConfig(Section):
    """``path`` (default ``<runtime.state_dir>/data.sqlite3``); ``flush_interval_s``
    bounds what a power cut loses; ``log_all`` logs every changed number and boolean
    of every named entity, ``fields`` then says how some are logged (the first rule
    that matches a field wins) and ``exclude`` which are not."""

    path: Path | None = None
    flush_interval_s: Annotated[float, Field(ge=0.05, le=60, strict=True)] = 1.0
    synchronous: Synchronous = "full"
    log_all: Annotated[bool, Field(strict=True)] = True
    fields: list[FieldRule] = Field(default_factory=list)
    exclude: list[Pattern] = Field(default_factory=list)
    retention: RetentionConfig = RetentionConfig()

    def database(self, state_dir: Path) -> Path:
        return self.path if self.path is not None else state_dir / "data.sqlite3"

    def rule_for(self, name: str) -> FieldRule | None:
        """How ``name`` is logged, or None if it is not."""
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude):
            return None
        for rule in self.fields:
            if fnmatch.fnmatchcase(name, rule.match):
                return rule
        return _EVERY_CHANGE if self.log_all else None


_EVERY_CHANGE = FieldRule(match="*")


def data_log_of(config: Config) -> Path | None:
    """Where ``config``'s data log is, or None if it has no ``data_log`` section."""
    section = config.sections.get("data_log")
    if not isinstance(section, DataLogConfig):
        return None
    return section.database(config.runtime.state_dir)
