"""The Sparkplug B edge node: the io part of the ``sparkplug`` section (docs/uplinks.md).

A session (aiomqtt, which does not reconnect by itself: each reconnect is a new
session, as Sparkplug wants) goes: CONNECT with a clean session and a Will on NDEATH
carrying this connect's bdSeq (QoS 1, not retained); subscribe to NCMD, DCMD and the
primary host's STATE; wait for that host to be online; NBIRTH (seq 0, bdSeq, every
metric with its current value, ``Node Control/Rebirth``) and a DBIRTH per device;
then the backlog, as historical data; then live: NDATA/DDATA with the changed metrics
only, by alias, ``seq`` +1 (mod 256) on every message. A Rebirth NCMD re-sends the
births with the same bdSeq. Each metric whose field has a quality carries it as the
``Quality`` property (``sparkplug_payload``), in births and data: a quality change is
a data message with the metric's value and its new quality.
A host that goes offline ends the session (NDEATH, DISCONNECT) and the next waits for
it; a stop publishes NDEATH before DISCONNECT.

Devices follow their health (a device's ``health``: the driver device whose
``DeviceHealth.state`` the control side reports, ``sparkplug.devices``): one that goes
offline gets a DDEATH and no data; back online, a DBIRTH with its current values,
before any of its data. A birth sequence births every device, alive or not (the
backlog's history is published against those births), and the dead get their DDEATH
right after the backlog.

Nothing is lost within the backlog's bound. Data messages are QoS 0, as the spec says,
so one that the broker never read is not reported as lost; the node knows what the
broker has read by a round trip (an UNSUBSCRIBE of a topic it never subscribed to,
answered in order after every PUBLISH before it) after each burst, and keeps the
changes of a burst until then. When the session ends, those and everything not sent
go to the backlog (``edgeloop.uplink.backlog``: SQLite, flushed every
``flush_interval_s``, kept across restarts) and are published as historical in the
next session, so a change near an outage may arrive twice (the same value and
timestamp), never not at all.

Commands: Rebirth is the node's own; a write to a metric goes to the control process
(``sparkplug.write``, HIGH) to be checked and audited as any command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from collections.abc import Sequence
from typing import Any

import aiomqtt

from edgeloop.drivers.health import Backoff
from edgeloop.logs import every_power_of_ten
from edgeloop.priority import Priority
from edgeloop.realtime.io_part import IoContext
from edgeloop.realtime.ipc import Record
from edgeloop.uplink import sparkplug_payload as sp
from edgeloop.uplink.backlog import Backlog, Change
from edgeloop.uplink.feed import FieldFeed
from edgeloop.uplink.sparkplug_config import Metric, SparkplugConfig
from edgeloop.uplink.sparkplug_records import TOPIC_DEVICES, TOPIC_STATUS, TOPIC_WRITE

log = logging.getLogger("edgeloop.sparkplug")

SOURCE = "sparkplug"  # the status line's name for it
BD_SEQ_KEY = "bdSeq"
BACKLOG_READ = 2000  # changes read from the backlog at a time while draining
OUTBOX_MAX = 200_000  # changes held in memory while the backlog drains; older spill to it
STOP_S = 5.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _SessionLost(Exception):
    pass


class SparkplugNode:
    def __init__(self, config: SparkplugConfig, context: IoContext) -> None:
        self.config = config
        self.context = context
        self.metrics: list[Metric] = config.flat()
        self.datatypes = [sp.DATATYPES[m.config.type] for m in self.metrics]
        self.values: list[Any] = [None] * len(self.metrics)
        self.qualities: list[int | None] = [None] * len(self.metrics)  # Quality properties
        self.stamps: list[int] = [_now_ms()] * len(self.metrics)
        # (t_ms, value, quality) of each in the last births
        self.born: list[tuple[int, Any, int | None]] = []
        self.devices = [device.id for device in config.devices]
        self.alive = dict.fromkeys(self.devices, True)  # what the control side says
        self.device_born: set[str] = set()  # devices with a DBIRTH and no DDEATH since
        self.by_device: dict[str | None, dict[str, Metric]] = {None: {}}
        for device in config.devices:
            self.by_device[device.id] = {}
        for metric in self.metrics:
            self.by_device[metric.device][metric.config.name] = metric
        group, node = config.group_id, config.edge_node_id
        self.client_id = config.client_id or f"edgeloop-{group}-{node}"
        self.confirm_topic = f"edgeloop/confirm/{self.client_id}"
        self.outbox: list[Change] = []  # changes not sent yet, oldest first
        self.unconfirmed: list[Change] = []  # sent; the broker has not shown it read them
        self.live = False  # births sent, backlog drained: changes go out as they come
        self.draining = False
        self.backlog: Backlog | None = None
        self.bd_seq = 0
        self.seq = 0
        self.sessions = 0
        self.births = 0
        self.published = 0  # metric values sent live
        self.historical = 0  # metric values sent from the backlog
        self.dropped = 0  # changes lost: past the backlog's bound, or no backlog
        self.refused_commands = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._host: bool | None = None  # the primary host's STATE in this session
        self._rebirth = False
        self._lost: BaseException | None = None
        self._gone = asyncio.Event()  # the session's connection is lost
        self._disk = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_status: list[Any] = []
        fields = [m.config.field for m in self.metrics]
        FieldFeed([*fields, *(f"{f}_quality" for f in fields)], context, self._on_changes)
        context.on_topic(TOPIC_DEVICES, self._on_devices)

    # -- the change feed ------------------------------------------------------------

    def _on_changes(self, t_us: int, changes: list[tuple[int, Any]]) -> None:
        t_ms = t_us // 1000
        count = len(self.metrics)
        touched: dict[int, None] = {}  # one change per metric a tick, value and quality
        for fed, value in changes:
            index = fed if fed < count else fed - count
            if fed < count:
                self.values[index] = value
            else:
                quality = sp.quality_code(value)
                if quality == self.qualities[index]:
                    continue
                self.qualities[index] = quality
            touched[index] = None
            self.stamps[index] = t_ms
        for index in touched:
            self.outbox.append((index, t_us, self.values[index], self.qualities[index]))
        if touched and self.live:
            self._wake.set()

    def _on_devices(self, record: Record) -> None:
        said = record.payload
        if not isinstance(said, list) or len(said) != len(self.devices):
            return
        alive = {device: bool(up) for device, up in zip(self.devices, said, strict=True)}
        if alive != self.alive:
            self.alive = alive
            self._wake.set()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        path = self.config.backlog.database(self.context.state_dir)
        try:
            self.backlog = await asyncio.to_thread(Backlog, path, self.config.backlog.max_changes)
            self.bd_seq = self.backlog.get(BD_SEQ_KEY, 0)
        except (OSError, sqlite3.Error) as error:
            # Live publishing still works; what happens while away is lost and counted.
            log.error("sparkplug backlog %s cannot be opened: %s; no store-and-forward",
                      path, error)  # fmt: skip
            self.context.degraded(f"{SOURCE}.backlog", f"{path}: {error}")
        self._tasks = [
            asyncio.create_task(self._run(), name="sparkplug-session"),
            asyncio.create_task(self._spool_every_interval(), name="sparkplug-spool"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        run, spool = self._tasks or (None, None)
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), STOP_S)
            except TimeoutError:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if spool is not None:
            await spool  # it ends at the stop, never in the middle of a write
        self._session_over()
        await self._spool()
        if self.backlog is not None:
            waiting = self.backlog.count
            self.backlog.close()
            log.info(
                "sparkplug: %d values published live, %d historical, %d waiting, %d dropped",
                self.published,
                self.historical,
                waiting,
                self.dropped,
            )

    # -- sessions -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        where = f"{self.config.broker.host}:{self.config.broker.port}"
        while not self._stop.is_set():
            try:
                await self._session(backoff)
            except (aiomqtt.MqttError, _SessionLost) as error:
                why = self._why(error)
                if every_power_of_ten(backoff.attempts + 1):
                    log.warning("sparkplug: broker %s: %s; changes wait in the backlog",
                                where, why)  # fmt: skip
                self.context.degraded(SOURCE, f"broker {where}: {why}")
            finally:
                self._session_over()
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff.next_delay())

    def _session_over(self) -> None:
        self.live = False
        self.device_born.clear()  # the host takes the NDEATH as every device's death
        self.draining = False
        self.outbox[:0] = self.unconfirmed  # they are older than what waits in memory
        self.unconfirmed = []
        self._report()

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context of a connect: the broker's certificate checked against
        ``ca_file`` (or the system's CAs), and its name or address."""
        broker = self.config.broker
        if not broker.tls:
            return None
        try:
            return ssl.create_default_context(cafile=broker.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise _SessionLost(f"broker.ca_file {broker.ca_file}: {error}") from None

    def _why(self, error: BaseException) -> str:
        """What went wrong with the broker, said so that it says what to check."""
        said = str(error) or type(error).__name__
        broker = self.config.broker
        if broker.tls and "CERTIFICATE_VERIFY_FAILED" in said:
            trusted = f"broker.ca_file {broker.ca_file}" if broker.ca_file else "the system's CAs"
            return f"TLS: the broker's certificate is not trusted by {trusted}: {said}"
        if isinstance(error, aiomqtt.MqttCodeError) and error.rc in (4, 5, 134, 135):
            return f"the broker refused broker.username/broker.password: {said}"
        return said

    def _client(self, bd_seq: int) -> aiomqtt.Client:
        broker = self.config.broker
        will = aiomqtt.Will(self._topic("NDEATH"), sp.death(bd_seq, _now_ms()), qos=1)
        return aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=self.client_id,
            will=will,
            clean_session=True,
            keepalive=broker.keepalive_s,
            timeout=1.5 * broker.keepalive_s,
            tls_context=self._tls(),
            logger=log,
        )

    async def _session(self, backoff: Backoff) -> None:
        bd_seq = self.bd_seq  # this connect's: the Will's, and every NBIRTH's until the next
        self.bd_seq = (bd_seq + 1) % 256
        await self._disk_call(lambda backlog: backlog.put(BD_SEQ_KEY, self.bd_seq))
        self._host, self._rebirth, self._lost = None, False, None
        self._gone.clear()
        async with self._client(bd_seq) as client:
            backoff.reset()
            self.sessions += 1
            topics = [(self._topic("NCMD"), 1), (self._topic("DCMD") + "/+", 1)]
            if self.config.primary_host_id is not None:
                topics.append((sp.state_topic(self.config.primary_host_id), 1))
            await client.subscribe(topics)
            reader = asyncio.create_task(self._read(client), name="sparkplug-read")
            try:
                await self._serve(client, bd_seq)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _serve(self, client: aiomqtt.Client, bd_seq: int) -> None:
        # [tck-id-operational-behavior-edge-node-birth-sequence-wait]: no birth before
        # the primary host says it is online.
        while self.config.primary_host_id is not None and self._host is not True:
            await self._next_event()
            if self._stop.is_set():
                return
        await self._spool()  # what waited in memory is history now: the births say now
        await self._births(client, bd_seq)
        await self._drain(client)
        self.context.degraded(SOURCE, None)
        self._report()
        while True:
            if self._host is False:
                # [tck-id-operational-behavior-primary-application-state-with-multiple-
                # servers-walk]: a host gone offline ends the session; the next waits.
                await self._death(client, bd_seq)
                raise _SessionLost(f"primary host {self.config.primary_host_id} is offline")
            await self._publish_live(client)
            if self._stop.is_set():
                await self._death(client, bd_seq)
                return
            if self._rebirth:
                self._rebirth = False
                await self._births(client, bd_seq)
            await self._next_event()

    async def _death(self, client: aiomqtt.Client, bd_seq: int) -> None:
        """[tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath]: NDEATH
        before the DISCONNECT that leaving ``async with`` sends."""
        await client.publish(self._topic("NDEATH"), sp.death(bd_seq, _now_ms()), qos=1)

    async def _next_event(self) -> None:
        await self._wake.wait()
        self._wake.clear()
        if self._lost is not None:
            raise _SessionLost(str(self._lost) or "connection lost")

    # -- publishing -----------------------------------------------------------------

    def _topic(self, verb: str, device: str | None = None) -> str:
        return sp.topic(self.config.group_id, verb, self.config.edge_node_id, device)

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) % 256  # [tck-id-payloads-sequence-num-incrementing]
        return seq

    async def _births(self, client: aiomqtt.Client, bd_seq: int) -> None:
        self.seq = 0  # [tck-id-payloads-nbirth-seq]
        t_ms = _now_ms()
        # one snapshot for every birth of the sequence (changes go on coming while they
        # are sent): what the births carry is what the drain then leaves out
        self.born = list(zip(self.stamps, self.values, self.qualities, strict=True))
        values = [*self._birth_values(None), *sp.node_birth_extras(bd_seq, t_ms)]
        payload = sp.encode(self._next_seq(), t_ms, values)
        await client.publish(self._topic("NBIRTH"), payload, qos=0)
        for device in self.devices:
            await self._device_birth(client, device, t_ms)
        self.births += 1

    def _birth_values(self, device: str | None) -> list[sp.Value]:
        born = self.born
        return [
            sp.Value(
                m.alias,
                self.datatypes[m.index],
                born[m.index][0],
                born[m.index][1],
                name=m.config.name,
                quality=born[m.index][2],
            )
            for m in self.by_device[device].values()
        ]

    async def _device_birth(self, client: aiomqtt.Client, device: str, t_ms: int) -> None:
        """DBIRTH: every metric of ``device`` as ``self.born`` has it."""
        payload = sp.encode(self._next_seq(), t_ms, self._birth_values(device))
        await client.publish(self._topic("DBIRTH", device), payload, qos=0)
        self.device_born.add(device)

    async def _devices_follow_health(self, client: aiomqtt.Client) -> None:
        """[tck-id-operational-behavior-device-ddeath]: a DDEATH for a device gone
        offline; a DBIRTH with its current values for one back, before its data."""
        for device in self.devices:
            alive, born = self.alive[device], device in self.device_born
            if alive == born:
                continue
            t_ms = _now_ms()
            if alive:
                # its births' values are now: what waits for it in the outbox is older
                for m in self.by_device[device].values():
                    self.born[m.index] = (self.stamps[m.index], self.values[m.index],
                                          self.qualities[m.index])  # fmt: skip
                self.outbox = [c for c in self.outbox if self.metrics[c[0]].device != device]
                await self._device_birth(client, device, t_ms)
                log.info("sparkplug device %s: back online, DBIRTH", device)
            else:
                # [tck-id-payloads-ddeath-seq]: a seq, and no metrics
                payload = sp.encode(self._next_seq(), t_ms, [])
                await client.publish(self._topic("DDEATH", device), payload, qos=0)
                self.device_born.discard(device)
                log.info("sparkplug device %s: offline, DDEATH", device)

    async def _publish(
        self, client: aiomqtt.Client, changes: Sequence[Change], *, historical: bool
    ) -> None:
        by_device: dict[str | None, list[sp.Value]] = {}
        born = self.device_born
        for index, t_us, value, quality in changes:
            metric = self.metrics[index]
            if metric.device is not None and metric.device not in born:
                continue  # a dead device has no data: its DBIRTH will carry what it has
            value_of = sp.Value(metric.alias, self.datatypes[index], t_us // 1000, value,
                                historical=historical, quality=quality)  # fmt: skip
            by_device.setdefault(metric.device, []).append(value_of)
        t_ms = _now_ms()
        for device, values in by_device.items():
            verb = "NDATA" if device is None else "DDATA"
            for start in range(0, len(values), sp.METRICS_PER_MESSAGE):
                part = values[start : start + sp.METRICS_PER_MESSAGE]
                payload = sp.encode(self._next_seq(), t_ms, part)
                await client.publish(self._topic(verb, device), payload, qos=0)

    async def _confirm(self, client: aiomqtt.Client) -> None:
        """Return once the broker has read every PUBLISH sent before; raise as soon as
        the connection is lost (aiomqtt would wait out its timeout for the answer)."""
        answer = asyncio.ensure_future(client.unsubscribe(self.confirm_topic))
        lost = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({answer, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await answer
            raise _SessionLost(str(self._lost) or "connection lost")
        answer.result()

    async def _publish_live(self, client: aiomqtt.Client) -> None:
        # before every burst: while changes keep coming this loop does not end
        await self._devices_follow_health(client)
        while self.outbox:
            changes, self.outbox = self.outbox, []
            self.unconfirmed += changes
            await self._publish(client, changes, historical=False)
            await self._confirm(client)
            self.published += len(self.unconfirmed)
            self.unconfirmed = []
            await self._devices_follow_health(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """The backlog, oldest first, until it is empty; then live. The last look and
        going live hold the disk lock, so no spool of changes can land behind them."""
        backlog = self.backlog
        if backlog is None:
            self.live = True
            return
        self.draining = True
        while True:
            async with self._disk:
                rows = await asyncio.to_thread(backlog.head, BACKLOG_READ)
                if not rows:
                    self.live, self.draining = True, False
                    return
            # what a birth of this session carried (the same time and value) is no history
            changes = [(m, t, v, q) for _, m, t, v, q in rows if self.born[m] != (t // 1000, v, q)]
            await self._publish(client, changes, historical=True)
            await self._confirm(client)
            last = rows[-1][0]
            await self._disk_call(lambda backlog, last=last: backlog.remove_through(last))
            self.historical += len(rows)
            self._report()

    # -- what the host sends --------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                self._received(str(message.topic), data)
        except aiomqtt.MqttError as error:
            self._lost = error
        else:
            self._lost = _SessionLost("the broker closed the connection")
        self._gone.set()
        self._wake.set()

    def _received(self, topic: str, data: bytes) -> None:
        parts = topic.split("/")
        if parts[1] == "STATE":
            online = sp.host_online(data)
            if online is not None:
                self._host = online
                self._wake.set()
            return
        device = parts[4] if len(parts) == 5 else None
        try:
            written = sp.commands(data)
        except ValueError as error:
            self._refused(f"{topic}: {error}")
            return
        writes: list[list[Any]] = []
        for item in written:
            if device is None and (item.name == sp.REBIRTH or item.alias == sp.REBIRTH_ALIAS):
                if item.value is True:
                    # [tck-id-operational-behavior-data-commands-rebirth-action-1]
                    self._rebirth = True
                    self._wake.set()
                continue
            metric = self._metric(device, item)
            label = item.name if item.name is not None else f"alias {item.alias}"
            where = label if device is None else f"{device}/{label}"
            writes.append([-1 if metric is None else metric.index, item.value, where])
        if writes:
            self.context.send(Record(TOPIC_WRITE, self._host_label(), Priority.HIGH, writes))

    def _metric(self, device: str | None, item: sp.Written) -> Metric | None:
        metrics = self.by_device.get(device)
        if metrics is None:
            return None
        if item.name is not None:
            return metrics.get(item.name)
        for metric in metrics.values():
            if metric.alias == item.alias:
                return metric
        return None

    def _host_label(self) -> str:
        host = self.config.primary_host_id
        where = f"{self.config.broker.host}:{self.config.broker.port}"
        return f"sparkplug host {host} via {where}" if host else f"sparkplug host via {where}"

    def _refused(self, why: str) -> None:
        self.refused_commands += 1
        if every_power_of_ten(self.refused_commands):
            log.warning("sparkplug command refused: %s (%d so far)", why, self.refused_commands)

    # -- the backlog ----------------------------------------------------------------

    async def _spool_every_interval(self) -> None:
        interval = self.config.backlog.flush_interval_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if not self.live and (not self.draining or len(self.outbox) > OUTBOX_MAX):
                await self._spool()

    async def _spool(self) -> None:
        """What waits in memory, to the backlog (dropped and counted without one). The
        changes leave memory under the disk lock: a drain never misses them in between."""
        async with self._disk:
            if self.live or not self.outbox:
                return  # live since this was asked for: they go out as they are
            changes, self.outbox = self.outbox, []
            if self.backlog is None:
                self._drop(len(changes))
                return
            try:
                dropped = await asyncio.to_thread(self.backlog.append, changes)
            except sqlite3.Error as error:
                log.error("sparkplug backlog: %s", error)
                dropped = len(changes)
        if dropped:
            self._drop(dropped)
        self._report()

    async def _disk_call(self, call: Any) -> Any:
        backlog = self.backlog
        if backlog is None:
            return None
        async with self._disk:
            return await asyncio.to_thread(call, backlog)

    def _drop(self, count: int) -> None:
        self.dropped += count
        if every_power_of_ten(self.dropped):
            log.error("sparkplug: %d changes dropped so far (backlog full or missing)",
                      self.dropped)  # fmt: skip

    def _report(self) -> None:
        waiting = 0 if self.backlog is None else self.backlog.count
        status = [self.live, waiting + len(self.outbox), self.dropped]
        if status != self._last_status:
            self._last_status = status
            self.context.send(Record(TOPIC_STATUS, "", Priority.NORMAL, status))
