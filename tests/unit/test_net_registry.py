from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.net import protocol
from edgeloop.net.registry import (
    ProtocolError,
    Registry,
    canonical_schema,
    info,
    message,
    schema_hash,
)
from edgeloop.priority import Priority


@dataclass
class Pose:
    x: float
    y: float


@message(name="robot.Telemetry")
@dataclass
class Telemetry:
    status: Literal["idle", "moving", "fault"]
    pose: Pose
    joints: list[float]
    temperature: float | None = None


@message(name="fleet.RobotTelemetry")  # the same schema under another name
@dataclass
class RenamedTelemetry:
    temperature: float | None
    joints: list[float]
    pose: Pose
    status: Literal["moving", "idle", "fault"]


@message(name="robot.Command", priority=Priority.HIGH)
@dataclass
class Command:
    action: str
    speed: float = 1.0


def test_canonical_schema_sorts_fields_and_inlines_nested_types() -> None:
    assert canonical_schema(Telemetry) == (
        "{joints:list<float>,pose:{x:float,y:float},status:enum<fault,idle,moving>,"
        "temperature:float?}"
    )
    assert info(Telemetry).schema_hash == schema_hash(canonical_schema(Telemetry))


def test_schema_hash_is_stable_across_releases() -> None:
    # The published example of docs/protocol.md (printf "{action:str,speed:float}" | sha256sum):
    # changing it breaks every peer.
    assert schema_hash("{action:str,speed:float}") == info(Command).schema_hash
    assert f"{info(Command).schema_hash:#018x}" == "0x9fe1eb7491619c80"


def test_renamed_type_with_same_schema_routes_by_hash() -> None:
    registry = Registry([Telemetry])
    found = registry.resolve("fleet.RobotTelemetry", info(RenamedTelemetry).schema_hash)
    assert found.info.type is Telemetry and found.by_hash


def test_same_name_different_hash_is_a_version_mismatch_naming_both() -> None:
    registry = Registry([Command])
    with pytest.raises(ProtocolError, match=r"version_mismatch: robot.Command: peer .* ours 0x"):
        registry.resolve("robot.Command", 12345)


def test_unknown_name_and_hash() -> None:
    with pytest.raises(ProtocolError, match="unknown_type"):
        Registry([Command]).resolve("robot.Nope", 1)


def test_types_without_a_wire_form_are_refused_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"Bad\.when: .* has no wire form"):

        @message(name="x.Bad")
        @dataclass
        class Bad:
            when: object


def test_payload_is_validated_into_the_type() -> None:
    found = info(Command)
    assert protocol.build(found, {"action": "stop"}) == Command("stop", 1.0)
    with pytest.raises(ProtocolError, match=r"bad_payload: robot.Command: .*speed"):
        protocol.build(found, {"action": "stop", "speed": "fast"})


def test_frames_round_trip_through_a_split_stream() -> None:
    reader = protocol.FrameReader()
    stream = b"".join(protocol.frame(protocol.encode(Command(f"a{i}"))) for i in range(5))
    bodies = [body for i in range(0, len(stream), 7) for body in reader.feed(stream[i : i + 7])]
    assert [protocol.split(b)[2]["action"] for b in bodies] == [f"a{i}" for i in range(5)]


def test_oversize_frame_is_refused_before_it_is_buffered() -> None:
    reader = protocol.FrameReader(max_frame_bytes=100)
    with pytest.raises(ProtocolError, match="oversize"):
        reader.feed(b"\x00\x00\x10\x00" + b"x" * 10)


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    reader = protocol.FrameReader(max_frame_bytes=200)
    registry = Registry([Command, Telemetry])
    try:
        for body in reader.feed(data):
            name, hash_, payload = protocol.split(body)
            protocol.build(registry.resolve(name, hash_).info, payload)
    except ProtocolError:
        pass
