"""The ``sparkplug`` config section: the broker, the edge node's ids, and which World
fields are published as which metrics (docs/uplinks.md, docs/config.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from edgeloop.config import Section
from edgeloop.field_ref import FieldPath

# A Sparkplug id (group, edge node, device, host) is one MQTT topic level: no '/', '+'
# or '#' (Sparkplug 3.0, [tck-id-topic-structure-namespace-valid-group-id] and its kin).
SparkplugId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
# A metric name may have '/' for a folder structure, as 'Node Control/Rebirth' does.
MetricName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_ ./:-]+$")]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]
EntityName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
MetricType = Literal["double", "float", "int64", "int32", "boolean"]

RESERVED_NAMES = frozenset({"bdSeq", "Node Control/Rebirth"})


class BrokerConfig(Section):
    host: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 1883
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password: Annotated[str, Field(max_length=1024)] | None = None
    tls: Flag = False
    ca_file: Path | None = None  # the broker's CA (default: the system's)
    keepalive_s: Annotated[int, Field(ge=2, le=3600, strict=True)] = 10

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is for TLS: set tls: true or remove it")
        return self


class MetricConfig(Section):
    """A World field published as a metric; ``writable`` lets the host write it (an
    NCMD or DCMD), within ``min``/``max``, through the checks of any command."""

    name: MetricName
    field: FieldPath
    type: MetricType = "double"
    writable: Flag = False
    min: Finite | None = None
    max: Finite | None = None

    @model_validator(mode="after")
    def _limits_fit(self) -> MetricConfig:
        limited = self.min is not None or self.max is not None
        if limited and not self.writable:
            raise ValueError("min and max limit writes: set writable: true or remove them")
        if limited and self.type == "boolean":
            raise ValueError("min and max are for numbers, not a boolean")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"{self.name!r} is the edge node's own metric")
        return self


def _unique_names(metrics: list[MetricConfig], where: str) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise ValueError(f"{where}: two metrics are named {metric.name!r}")
        seen.add(metric.name)


class DeviceConfig(Section):
    """A Sparkplug device (DBIRTH, DDATA, DCMD): an edgeloop device, a robot, a tank.
    ``health``: the driver device (its name in ``modbus``, ``can``, ...) whose health
    says whether this one is alive: DDEATH while it is offline, DBIRTH when back."""

    id: SparkplugId
    health: EntityName | None = None
    metrics: Annotated[list[MetricConfig], Field(min_length=1, max_length=10_000)]

    @model_validator(mode="after")
    def _names(self) -> DeviceConfig:
        _unique_names(self.metrics, f"device {self.id}")
        return self


class BacklogConfig(Section):
    """Store-and-forward: changes made while the broker or the primary host is away wait
    in SQLite (``path``, default ``<runtime.state_dir>/sparkplug-backlog.sqlite3``), at
    most ``max_changes`` (the oldest beyond are dropped and counted); a power cut loses
    at most ``flush_interval_s`` of them."""

    path: Path | None = None
    max_changes: Annotated[int, Field(ge=1000, le=100_000_000, strict=True)] = 1_000_000
    flush_interval_s: Annotated[float, Field(ge=0.05, le=60, strict=True)] = 0.5

    def database(self, state_dir: Path) -> Path:
        return self.path if self.path is not None else state_dir / "sparkplug-backlog.sqlite3"


class SparkplugConfig(Section):
    broker: BrokerConfig = BrokerConfig()
    group_id: SparkplugId
    edge_node_id: SparkplugId
    # the host application whose STATE says when to publish (none: publish when connected)
    primary_host_id: SparkplugId | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    metrics: Annotated[list[MetricConfig], Field(max_length=10_000)] = Field(default_factory=list)
    devices: Annotated[list[DeviceConfig], Field(max_length=1000)] = Field(default_factory=list)
    backlog: BacklogConfig = BacklogConfig()
    reconnect_min_s: Annotated[float, Field(gt=0, le=60, strict=True)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=600, strict=True)] = 30.0

    @model_validator(mode="after")
    def _consistent(self) -> SparkplugConfig:
        if not self.metrics and not self.devices:
            raise ValueError("publish something: give metrics or devices")
        _unique_names(self.metrics, "the edge node")
        ids = [device.id for device in self.devices]
        for device_id in ids:
            if ids.count(device_id) > 1:
                raise ValueError(f"two devices have the id {device_id!r}")
        fields = [metric.field for metric in self.all_metrics()]
        for path in fields:
            if fields.count(path) > 1:
                raise ValueError(f"{path} is published as two metrics: map it once")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        return self

    def all_metrics(self) -> list[MetricConfig]:
        return [*self.metrics, *(m for device in self.devices for m in device.metrics)]

    def flat(self) -> list[Metric]:
        """Every metric with its device and alias (its index + 1; 0 is Rebirth's)."""
        found: list[Metric] = []
        for metric in self.metrics:
            found.append(Metric(len(found), None, metric))
        for device in self.devices:
            for metric in device.metrics:
                found.append(Metric(len(found), device.id, metric))
        return found


@dataclass(frozen=True, slots=True)
class Metric:
    index: int
    device: str | None  # None: the edge node's own
    config: MetricConfig

    @property
    def alias(self) -> int:
        return self.index + 1

    @property
    def where(self) -> str:
        """The metric's place in the config, as messages name it."""
        owner = "the edge node" if self.device is None else f"device {self.device}"
        return f"sparkplug {owner} metric {self.config.name!r}"
