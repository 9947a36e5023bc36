"""The ``postgres`` config section: where the change feed goes (docs/uplinks.md)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from edgeloop.config import Section

Pattern = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.*?\[\]-]+$")]
TableName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z_][a-z0-9_]*$")]


class PostgresConfig(Section):
    """``conninfo`` is libpq's (``host=db.plant port=5432 dbname=plant user=edgeloop``;
    a password is better in ``~/.pgpass`` or ``PGPASSFILE`` than here). Each change of a
    field the data log collects and ``fields`` matches becomes a row of ``table``."""

    conninfo: Annotated[str, Field(min_length=1, max_length=2000)]
    table: TableName = "edgeloop_samples"
    appliance: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    fields: list[Pattern] = Field(default_factory=lambda: ["*"])
    flush_interval_s: Annotated[float, Field(ge=0.05, le=60, strict=True)] = 1.0
    backlog_path: Path | None = None
    max_changes: Annotated[int, Field(ge=1000, le=100_000_000, strict=True)] = 1_000_000
    connect_timeout_s: Annotated[int, Field(ge=1, le=600, strict=True)] = 5  # libpq: whole s
    reconnect_min_s: Annotated[float, Field(gt=0, le=60, strict=True)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=600, strict=True)] = 30.0

    @model_validator(mode="after")
    def _consistent(self) -> PostgresConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        return self

    def stores(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.fields)

    def backlog(self, state_dir: Path) -> Path:
        if self.backlog_path is not None:
            return self.backlog_path
        return state_dir / "postgres-backlog.sqlite3"
