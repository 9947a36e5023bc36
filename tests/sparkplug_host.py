"""The test's side of Sparkplug: a host application on the test's broker, and an io
context that runs an edge node (``SparkplugNode``, or another uplink) in the test's
event loop.

The host subscribes to the group's topics, keeps every message it gets, decoded, in
arrival order, and reconnects by itself when the broker comes back (then says it is
online again: its STATE is retained, with a Will saying offline, as the spec's hosts
do, and the broker forgets both when it restarts without persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from edgeloop.data.collect import TOPIC_BATCH
from edgeloop.realtime.ipc import Record
from edgeloop.uplink.sparkplug_b_pb2 import Payload

GROUP = "plant"
NODE = "cell1"
HOST_ID = "scada"


@dataclass
class Received:
    topic: str
    verb: str
    device: str | None
    payload: Payload
    raw: bytes


class Host:
    def __init__(
        self,
        port: int,
        *,
        host_id: str = HOST_ID,
        online: bool = True,
        group: str = GROUP,
        node: str = NODE,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self._login: dict[str, Any] = {"tls_context": tls_context, "username": username,
                                       "password": password}  # fmt: skip
        self.group, self.node = group, node
        self.host_id = host_id
        self.online = online  # what it says on every (re)connect
        self.received: list[Received] = []
        self.connects = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.host_id}"

    def _state(self, online: bool) -> bytes:
        return json.dumps({"online": online, "timestamp": time.time_ns() // 1_000_000}).encode()

    async def __aenter__(self) -> Host:
        self._task = asyncio.create_task(self._keep_connected())
        await asyncio.wait_for(self._subscribed.wait(), 20)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _keep_connected(self) -> None:
        will = aiomqtt.Will(self.state_topic, self._state(False), qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=f"test-host-{self.host_id}",
                    clean_session=True,
                    will=will,
                    keepalive=5,
                    **self._login,
                ) as client:
                    await client.subscribe(f"spBv1.0/{self.group}/#", qos=1)
                    self._client = client
                    self.connects += 1
                    await client.publish(self.state_topic, self._state(self.online), 1, True)
                    self._subscribed.set()
                    async for message in client.messages:
                        self._keep(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                self._client = None
                self._subscribed.clear()
                await asyncio.sleep(0.05)  # the broker is away: try again soon

    def _keep(self, topic: str, raw: Any) -> None:
        parts = topic.split("/")
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        payload = Payload()
        if parts[2] != "STATE":
            payload.ParseFromString(data)
        device = parts[4] if len(parts) == 5 else None
        self.received.append(Received(topic, parts[2], device, payload, data))

    async def connected(self) -> None:
        await asyncio.wait_for(self._subscribed.wait(), 30)

    async def say(self, online: bool) -> None:
        """Publish this host's STATE (retained), and keep saying it on reconnects."""
        self.online = online
        await self.connected()
        assert self._client is not None
        await self._client.publish(self.state_topic, self._state(online), 1, True)

    async def command(self, verb: str, device: str | None, metrics: list[Payload.Metric]) -> None:
        topic = f"spBv1.0/{self.group}/{verb}/{self.node}"
        topic += "" if device is None else f"/{device}"
        payload = Payload(timestamp=time.time_ns() // 1_000_000)
        payload.metrics.extend(metrics)
        await self.connected()
        assert self._client is not None
        await self._client.publish(topic, payload.SerializeToString(), qos=0)

    # -- what arrived -----------------------------------------------------------------

    def of(self, *verbs: str) -> list[Received]:
        return [r for r in self.received if r.verb in verbs]

    def data(self, alias: int) -> list[tuple[int, Any, bool]]:
        """(timestamp, value, is_historical) of every data value of ``alias``, in order."""
        found = []
        for message in self.of("NDATA", "DDATA"):
            for metric in message.payload.metrics:
                if metric.alias == alias:
                    found.append((metric.timestamp, _value(metric), metric.is_historical))
        return found

    def history(self, alias: int) -> list[tuple[int, Any]]:
        """(timestamp, value) of ``alias`` as a historian keeps it: from the births (a
        birth carries the current value, which the data then leaves out) and the data,
        each once, by timestamp."""
        found: dict[tuple[int, Any], None] = {}
        for message in self.of("NBIRTH", "DBIRTH", "NDATA", "DDATA"):
            for metric in message.payload.metrics:
                if metric.alias == alias and metric.name not in ("bdSeq",):
                    found.setdefault((metric.timestamp, _value(metric)), None)
        return sorted(found, key=lambda stamped: stamped[0])


def _value(metric: Payload.Metric) -> Any:
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    return None if which is None else getattr(metric, which)


def quality_of(metric: Payload.Metric) -> int | None:
    """The metric's ``Quality`` property (Ignition's convention), None if it has none."""
    keys = list(metric.properties.keys)
    return metric.properties.values[keys.index("Quality")].int_value if "Quality" in keys else None


def metric_named(payload: Payload, name: str) -> Payload.Metric:
    for metric in payload.metrics:
        if metric.name == name:
            return metric
    raise AssertionError(f"no metric {name!r} in {[m.name for m in payload.metrics]}")


@dataclass
class NodeContext:
    """The io process's IoContext, as far as an edge node uses it: the change feed's
    records are handed to it by ``feed``, what it sends to the control kept in ``sent``."""

    state_dir: Path
    server_name: str = "test-appliance"
    handlers: dict[str, list[Callable[[Record], None]]] = field(default_factory=dict)
    sent: list[Record] = field(default_factory=list)
    said: dict[str, str | None] = field(default_factory=dict)
    _ids: dict[str, int] = field(default_factory=dict)
    _tick: int = 0

    def on_topic(self, topic: str, handler: Callable[[Record], None]) -> None:
        self.handlers.setdefault(topic, []).append(handler)

    def send(self, record: Record) -> bool:
        self.sent.append(record)
        return True

    def degraded(self, source: str, reason: str | None) -> None:
        self.said[source] = reason

    def tell(self, topic: str, payload: Any) -> None:
        """A record from the control process other than the change feed's."""
        for handler in self.handlers.get(topic, []):
            handler(Record(topic, "", 1, payload))

    def feed(self, values: dict[str, Any], t_us: int | None = None) -> int:
        """One tick's changes, as the control process's DataLogging sends them; t_us."""
        self._tick += 1
        t_us = time.time_ns() // 1000 if t_us is None else t_us
        declared, flat = [], []
        for name, value in values.items():
            if name not in self._ids:
                self._ids[name] = len(self._ids) + 1
                declared.append([self._ids[name], name, False])
            flat += [self._ids[name], value]
        record = Record(TOPIC_BATCH, f"{self._tick}.0", 2, [self._tick, t_us, declared, flat])
        for handler in self.handlers.get(TOPIC_BATCH, []):
            handler(record)
        return t_us


async def until(done: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Poll ``done`` every few ms until it holds, failing after ``deadline_s``."""
    give_up = time.monotonic() + deadline_s
    while not done():
        assert time.monotonic() < give_up, f"not within {deadline_s} s: {what}"
        await asyncio.sleep(0.005)
