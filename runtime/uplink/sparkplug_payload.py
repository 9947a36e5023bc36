"""Sparkplug B topics and payloads (Eclipse Sparkplug 3.0), through the spec's ``.proto``.

Metric values are set by datatype: Int32 in ``int_value`` and Int64 in ``long_value``
as two's complement (the proto's fields are unsigned), Float, Double and Boolean in
their own; a value edgeloop has none for (NaN, or not seen yet) is ``is_null``.

A metric whose World field has a quality (a driver point's ``<field>_quality``) carries
it as the property ``Quality``, an Int32: 192 good, 500 stale, 0 bad. Sparkplug 3.0
has no quality of its own; this is the convention of Ignition's MQTT Engine (the
Cirrus Link modules), which the hosts in the field read
(https://forum.inductiveautomation.com/t/tag-quality-via-sparkplug/34456).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeloop.uplink.sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"

INT32, INT64, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 9, 10, 11, 12
DATATYPES = {"int32": INT32, "int64": INT64, "float": FLOAT, "double": DOUBLE, "boolean": BOOLEAN}
# The configured metrics' aliases are 1 and up, Rebirth's 0; bdSeq has none.
REBIRTH_ALIAS, NO_ALIAS = 0, -1
# A message carries at most this many metrics: a backlog drains in messages of this size.
METRICS_PER_MESSAGE = 500

QUALITY = "Quality"
QUALITY_GOOD, QUALITY_STALE, QUALITY_BAD = 192, 500, 0
# edgeloop's Quality (drivers/points.py: GOOD 0, STALE 1, BAD 2) as the property says it
QUALITIES = {0: QUALITY_GOOD, 1: QUALITY_STALE, 2: QUALITY_BAD}


def quality_code(quality: Any) -> int | None:
    """The ``Quality`` property of an edgeloop quality; None for no quality (no value)."""
    return None if quality is None else QUALITIES.get(int(quality), QUALITY_BAD)


def topic(group: str, verb: str, node: str, device: str | None = None) -> str:
    """``spBv1.0/<group>/<verb>/<node>[/<device>]`` ([tck-id-topic-structure])."""
    base = f"{NAMESPACE}/{group}/{verb}/{node}"
    return base if device is None else f"{base}/{device}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


@dataclass(frozen=True, slots=True)
class Value:
    """One metric's value at one time, as a payload carries it."""

    alias: int
    datatype: int
    t_ms: int
    value: Any  # None: is_null
    historical: bool = False
    name: str | None = None  # births only: data messages carry the alias alone
    quality: int | None = None  # the Quality property; None: the field has no quality


def _set(metric: Payload.Metric, datatype: int, value: Any) -> None:
    metric.datatype = datatype
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        metric.is_null = True
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == INT64:
        metric.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    elif datatype == INT32:
        metric.int_value = int(value) & 0xFFFF_FFFF
    else:
        raise ValueError(f"datatype {datatype} is not one edgeloop publishes")


def encode(seq: int | None, t_ms: int, values: Iterable[Value]) -> bytes:
    """A payload: ``seq`` (None for NDEATH, which has none), its timestamp and metrics."""
    payload = Payload(timestamp=t_ms)
    if seq is not None:
        payload.seq = seq
    for value in values:
        metric = payload.metrics.add()
        if value.name is not None:
            metric.name = value.name
        if value.alias != NO_ALIAS:
            metric.alias = value.alias
        metric.timestamp = value.t_ms
        if value.historical:
            metric.is_historical = True
        if value.quality is not None:
            metric.properties.keys.append(QUALITY)
            metric.properties.values.add(type=INT32, int_value=value.quality)
        _set(metric, value.datatype, value.value)
    return payload.SerializeToString()


def death(bd_seq: int, t_ms: int) -> bytes:
    """NDEATH: only bdSeq ([tck-id-payloads-ndeath-bdseq]), and no seq."""
    return encode(None, t_ms, [Value(NO_ALIAS, INT64, t_ms, bd_seq, name=BD_SEQ)])


def node_birth_extras(bd_seq: int, t_ms: int) -> list[Value]:
    """What every NBIRTH has besides the configured metrics: bdSeq
    ([tck-id-payloads-nbirth-bdseq]) and Rebirth, false
    ([tck-id-operational-behavior-data-commands-rebirth-name], -datatype, -value)."""
    return [
        Value(REBIRTH_ALIAS, BOOLEAN, t_ms, False, name=REBIRTH),
        Value(NO_ALIAS, INT64, t_ms, bd_seq, name=BD_SEQ),
    ]


@dataclass(frozen=True, slots=True)
class Written:
    """A metric of an NCMD or DCMD: by name or by alias, and the value asked for."""

    name: str | None
    alias: int | None
    value: Any


def commands(data: bytes) -> list[Written]:
    """The metrics of a command payload (ValueError if it does not decode)."""
    payload = Payload()
    try:
        payload.ParseFromString(data)
    except Exception as error:  # protobuf raises its own DecodeError (a bare Exception)
        raise ValueError(f"not a Sparkplug B payload: {error}") from None
    found = []
    for metric in payload.metrics:
        which = metric.WhichOneof("value")
        value: Any = None if which is None or metric.is_null else getattr(metric, which)
        if which == "int_value" and metric.datatype in (1, 2, 3) and value >= 1 << 31:
            value -= 1 << 32  # Int8, Int16, Int32: two's complement in a uint32
        elif which == "long_value" and metric.datatype == INT64 and value >= 1 << 63:
            value -= 1 << 64
        name = metric.name if metric.HasField("name") else None
        alias = metric.alias if metric.HasField("alias") else None
        found.append(Written(name, alias, value))
    return found


def host_online(data: bytes) -> bool | None:
    """What a STATE message says: JSON ``{"online": true, ...}`` (3.0), or the
    ``ONLINE``/``OFFLINE`` of earlier hosts; None if it says neither."""
    text = data.decode("utf-8", errors="replace").strip()
    if text in ("ONLINE", "OFFLINE"):
        return text == "ONLINE"
    try:
        said = json.loads(text)
    except ValueError:
        return None
    online = said.get("online") if isinstance(said, dict) else None
    return online if isinstance(online, bool) else None
