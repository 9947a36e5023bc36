"""Sparkplug B payloads as the spec's .proto has them, and the config's checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgeloop.uplink import sparkplug_payload as sp
from edgeloop.uplink.sparkplug_b_pb2 import Payload
from edgeloop.uplink.sparkplug_config import SparkplugConfig

UPLINK = Path(sp.__file__).parent


def test_values_go_in_the_field_of_their_datatype() -> None:
    """[tck-id-payloads-metric-datatype-value]: Int32 as two's complement in int_value,
    Int64 in long_value; NaN and no value as is_null."""
    data = sp.encode(
        7,
        1000,
        [
            sp.Value(1, sp.INT32, 1, -2),
            sp.Value(2, sp.INT64, 2, -3),
            sp.Value(3, sp.DOUBLE, 3, float("nan")),
            sp.Value(4, sp.BOOLEAN, 4, True, historical=True),
            sp.Value(5, sp.FLOAT, 5, None),
        ],
    )
    payload = Payload.FromString(data)
    assert (payload.seq, payload.timestamp) == (7, 1000)
    first, second, nan, flag, null = payload.metrics
    assert first.int_value == (1 << 32) - 2
    assert second.long_value == (1 << 64) - 3
    assert nan.is_null and null.is_null
    assert flag.boolean_value and flag.is_historical
    assert not first.HasField("name")


def test_a_command_decodes_by_name_or_alias_with_signed_numbers() -> None:
    payload = Payload()
    payload.metrics.add(name="setpoint", datatype=sp.DOUBLE, double_value=1.5)
    payload.metrics.add(alias=3, datatype=sp.INT32, int_value=(1 << 32) - 5)
    payload.metrics.add(alias=4, datatype=sp.BOOLEAN, is_null=True)
    written = sp.commands(payload.SerializeToString())
    assert written == [
        sp.Written("setpoint", None, 1.5),
        sp.Written(None, 3, -5),
        sp.Written(None, 4, None),
    ]
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        sp.commands(b"\xff\xff\xff")


def test_ndeath_has_bd_seq_and_no_seq() -> None:
    """[tck-id-payloads-ndeath-seq] (none) and [tck-id-payloads-ndeath-bdseq]."""
    death = Payload.FromString(sp.death(42, 1000))
    assert not death.HasField("seq")
    ((metric),) = death.metrics
    assert (metric.name, metric.datatype, metric.long_value) == ("bdSeq", sp.INT64, 42)
    assert not metric.HasField("alias")


def test_state_payloads_of_3_0_and_of_earlier_hosts() -> None:
    assert sp.host_online(json.dumps({"online": True, "timestamp": 1}).encode()) is True
    assert sp.host_online(b'{"online": false, "timestamp": 1}') is False
    assert sp.host_online(b"ONLINE") is True
    assert sp.host_online(b"OFFLINE") is False
    assert sp.host_online(b"maybe") is None


def test_the_generated_module_is_the_proto_s(tmp_path: Path) -> None:
    """sparkplug_b_pb2.py is checked in; protoc (grpcio-tools) makes the same from the
    .proto beside it, so neither changes without the other."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{UPLINK}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", str(UPLINK / "sparkplug_b.proto")],
        check=True,
        timeout=60,
    )  # fmt: skip
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_text() == (UPLINK / name).read_text(), name


def _config(**changes: object) -> dict[str, object]:
    return {"group_id": "plant", "edge_node_id": "cell1",
            "metrics": [{"name": "level", "field": "tank1.Tank.level"}], **changes}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metrics": []}, "publish something"),
        ({"group_id": "a/b"}, "should match pattern"),
        ({"metrics": [{"name": "bdSeq", "field": "a.B.c"}]}, "the edge node's own metric"),
        ({"metrics": [{"name": "x", "field": "a.B.c", "min": 0}]}, "set writable"),
        ({"metrics": [{"name": "x", "field": "a.B.c"}, {"name": "x", "field": "a.B.d"}]},
         "two metrics are named"),
        ({"devices": [{"id": "d", "metrics": [{"name": "y", "field": "tank1.Tank.level"}]}]},
         "published as two metrics"),
        ({"broker": {"password": "p"}}, "a password needs a username"),
    ],
)  # fmt: skip
def test_config_mistakes_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SparkplugConfig.model_validate(_config(**changes))
