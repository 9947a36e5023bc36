"""Sparkplug B uplink benchmark: metrics/s published to a real broker beside the control
loop's lateness, and how fast the backlog drains after an outage.

Each phase runs the real ``edgeloop run`` (supervisor, control and io processes) with
``--tanks`` simulated tanks (each tick changes 4 numbers of each: level, pump speed,
PID output and integral) and a Mosquitto of the bench's own on 127.0.0.1:

1. ``idle``: no uplink: the control loop's p99 lateness.
2. ``live``: the ``sparkplug`` section publishing every tank as a device (4 metrics
   each); a host in this process counts the metrics that arrive: metrics/s, and the
   loop's p99 lateness again.
3. ``outage``: the broker stopped for ``--outage`` seconds while the plant runs on (the
   changes wait in the backlog), then started again: the historical metrics/s while
   the backlog drains, from the first historical metric to the last.

``lost`` (of the outage phase) is what the edge node counted as published, live and
historical, that the host never got, plus what the node dropped past the backlog's
bound. The lateness comes from the control process's own histogram.

    python bench/uplink.py [--duration 10] [--tanks 50] [--outage 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from report import emit, machine_description

from edgeloop.uplink.sparkplug_b_pb2 import Payload

RESULTS = Path(__file__).resolve().parent / "results"
GROUP, NODE, HOST_ID = "bench", "bench", "bench-host"
STATE_TOPIC = f"spBv1.0/STATE/{HOST_ID}"
FIELDS = ("TankLevel.level_m", "Pump.speed", "Pid.output", "Pid.integral")
_STOPPED = re.compile(r"control loop stopped after (\d+) ticks: lateness p99 (\d+) µs, (\d+) over")
_NODE = re.compile(
    r"sparkplug: (\d+) values published live, (\d+) historical, (\d+) waiting, (\d+) dropped"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    def __init__(self, place: Path) -> None:
        self.port = _free_port()
        self.config = place / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                               "persistence false\nlog_dest none\n")  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if binary is None:
            raise SystemExit("mosquitto is not installed: apt-get install mosquitto")
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen([binary, "-c", str(self.config)], stdout=quiet, stderr=quiet)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not listen") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Host:
    """A host application counting the metrics that arrive (its own thread, paho's)."""

    port: int
    live: int = 0
    historical: int = 0
    first_historical: float = 0.0
    last_historical: float = 0.0
    last: float = 0.0  # when anything last came
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-host")
        # the node's primary host: it publishes only once this host has subscribed
        self.client.will_set(STATE_TOPIC, json.dumps({"online": False}), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect_async("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"spBv1.0/{GROUP}/+/{NODE}/+")
        client.publish(STATE_TOPIC, json.dumps({"online": True}), qos=1, retain=True)

    def _on_message(self, _: Any, __: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.split("/")[2] != "DDATA":
            return
        payload = Payload.FromString(message.payload)
        now = time.monotonic()
        with self.lock:
            self.last = now
            for metric in payload.metrics:
                if metric.is_historical:
                    self.historical += 1
                    self.first_historical = self.first_historical or now
                    self.last_historical = now
                else:
                    self.live += 1

    def reset(self) -> None:
        with self.lock:
            self.live = self.historical = 0
            self.first_historical = self.last_historical = 0.0

    def settle(self) -> None:
        """Wait until nothing has come for a while: what was sent has arrived."""
        deadline = time.monotonic() + 30
        while time.monotonic() - self.last < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _config(tanks: int, port: int | None) -> str:
    rows = "\n".join(f"    - {{name: tank{i}}}" for i in range(tanks))
    text = f"runtime: {{name: bench, state_dir: STATE}}\ntank_plant:\n  tanks:\n{rows}\n"
    if port is None:
        return text
    devices = "\n".join(
        f"    - id: tank{i}\n      metrics:\n"
        + "\n".join(f"        - {{name: {f.split('.')[1]}, field: tank{i}.{f}}}" for f in FIELDS)
        for i in range(tanks)
    )
    return text + (
        f"sparkplug:\n  broker: {{port: {port}, keepalive_s: 5}}\n  group_id: {GROUP}\n"
        f"  edge_node_id: {NODE}\n  primary_host_id: {HOST_ID}\n"
        "  reconnect_min_s: 0.1\n  reconnect_max_s: 0.5\n"
        f"  devices:\n{devices}\n"
    )


@dataclass
class Run:
    ticks: int = 0
    p99_us: int = 0
    overruns: int = 0
    node: tuple[int, ...] = (0, 0, 0, 0)  # published live, historical, waiting, dropped
    seconds: float = 0.0


def run_phase(place: Path, config: str, hold: Any) -> Run:
    place.mkdir(parents=True)
    path = place / "config.yaml"
    path.write_text(config.replace("STATE", str(place / "state")))
    log = place / "run.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "edgeloop.cli", "run", "-c", str(path)],
                                stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "ready:" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edgeloop run did not get ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        started = time.monotonic()
        hold()
        seconds = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text(errors="replace")
    run = Run(seconds=seconds)
    if stopped := _STOPPED.search(text):
        run.ticks, run.p99_us, run.overruns = (int(g) for g in stopped.groups())
    if node := _NODE.search(text):
        run.node = tuple(int(g) for g in node.groups())
    elif "sparkplug:" in config:
        raise RuntimeError(f"the edge node's totals are not in its log:\n{text[-2000:]}")
    return run


def _measure(workdir: Path, duration_s: float, tanks: int, outage_s: float) -> dict[str, Any]:
    idle = run_phase(workdir / "idle", _config(tanks, None), lambda: time.sleep(duration_s))
    broker = Broker(workdir)
    broker.start()
    host = Host(broker.port)
    counted: dict[str, float] = {}

    def live() -> None:
        time.sleep(1.0)  # births and the first bursts out of the way
        with host.lock:
            before, counted["start"] = host.live, time.monotonic()
        time.sleep(duration_s)
        with host.lock:
            counted["live"] = host.live - before
            counted["seconds"] = time.monotonic() - counted["start"]

    def outage() -> None:
        time.sleep(1.0)
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        deadline = time.monotonic() + max(60.0, 20 * outage_s)
        while True:  # drained: historical values stopped coming for a while
            time.sleep(0.5)
            with host.lock:
                quiet = host.historical and time.monotonic() - host.last_historical > 1.0
            if quiet or time.monotonic() > deadline:
                return

    try:
        loaded = run_phase(workdir / "live", _config(tanks, broker.port), live)
        host.settle()
        host.reset()
        drained = run_phase(workdir / "outage", _config(tanks, broker.port), outage)
        host.settle()
    finally:
        host.close()
        broker.stop()
    drain_s = host.last_historical - host.first_historical
    sent = drained.node[0] + drained.node[1]  # both count a value sent twice twice
    got = host.live + host.historical
    return {
        "machine": machine_description(),
        "tanks": tanks,
        "metrics": tanks * len(FIELDS),
        "duration_s": duration_s,
        "outage_s": outage_s,
        "metrics_per_s": round(counted.get("live", 0) / counted.get("seconds", 1)),
        "loop_p99_us": loaded.p99_us,
        "idle_p99_us": idle.p99_us,
        "p99_ratio_to_idle": round(loaded.p99_us / idle.p99_us, 2) if idle.p99_us else None,
        "overruns": loaded.overruns,
        "idle_overruns": idle.overruns,
        "backlog_metrics": drained.node[1],
        "drain_metrics_per_s": round(drained.node[1] / drain_s) if drain_s > 0 else 0,
        "lost": max(0, sent - got) + drained.node[3],
        "dropped": drained.node[3],
        "waiting_at_stop": drained.node[2],
    }


def _table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"sparkplug uplink, {r['tanks']} tanks ({r['metrics']} metrics), "
            f"{r['duration_s']:g} s, outage {r['outage_s']:g} s — {r['machine']}",
            f"  published live    {r['metrics_per_s']:>10,} metrics/s",
            f"  loop p99          {r['loop_p99_us']:>10} µs  (idle {r['idle_p99_us']} µs, "
            f"ratio {r['p99_ratio_to_idle']}; overruns {r['overruns']} vs {r['idle_overruns']})",
            f"  backlog drained   {r['drain_metrics_per_s']:>10,} metrics/s  "
            f"({r['backlog_metrics']:,} historical)",
            f"  lost              {r['lost']:>10}  (dropped {r['dropped']}, "
            f"waiting at stop {r['waiting_at_stop']})",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of live load")
    parser.add_argument("--tanks", type=int, default=50)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the broker is away")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="uplink-", dir=RESULTS))
    try:
        result = _measure(workdir, args.duration, args.tanks, args.outage)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    emit(_table(result), result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
