"""The dashboard's files: the schema hashes its script sends match the registry's, and
the audit log's tail is read from the end, whole entries only, without the chain."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgeloop.alarm_commands import Acknowledge
from edgeloop.net import protocol
from edgeloop.net.registry import info
from edgeloop.safety.estop import Reset, Stop
from edgeloop.sim.robots import Command
from edgeloop.web import audit_tail
from edgeloop.web.static_files import load
from edgeloop.wiring_requests import WiringRequest

SENT = (protocol.Hello, protocol.Subscribe, Stop, Reset, Acknowledge, WiringRequest, Command)


def test_the_script_sends_each_type_under_the_registrys_hash() -> None:
    script = load()["dashboard.js"][0].decode()
    table = dict(re.findall(r'"([a-z]+\.[A-Za-z]+)": "([0-9a-f]{16})"', script))
    assert table == {info(t).name: f"{info(t).schema_hash:016x}" for t in SENT}


def test_uplot_ships_with_its_licence() -> None:
    files = load()
    assert "MIT License" in files["uPlot.LICENSE.txt"][0].decode()
    assert files["uPlot.iife.min.js"][1].startswith("text/javascript")


def _write(path: Path, count: int) -> None:
    with path.open("w") as file:
        for seq in range(count):
            file.write(json.dumps({"seq": seq, "event": "e", "prev": "p", "hash": "h"}) + "\n")


def test_the_tail_is_the_last_entries_without_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 30)
    with path.open("a") as file:
        file.write('{"seq": 30, "event": "half wri')  # an entry on its way to the disk
    assert audit_tail.tail(path, 3) == [{"seq": s, "event": "e"} for s in (27, 28, 29)]


def test_a_long_log_is_read_from_its_end_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 20_000)  # over a MiB: far more than TAIL_BYTES
    assert path.stat().st_size > 10 * audit_tail.TAIL_BYTES
    entries = audit_tail.tail(path, 1000)
    assert len(entries) == audit_tail.MAX_ENTRIES
    assert entries[-1]["seq"] == 19_999
    assert [e["seq"] for e in entries] == list(range(19_800, 20_000))


def test_no_log_yet_is_an_empty_tail(tmp_path: Path) -> None:
    assert audit_tail.tail(tmp_path / "audit.jsonl", 5) == []
