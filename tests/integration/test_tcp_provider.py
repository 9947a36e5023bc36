"""The TCP provider on a real 127.0.0.1 socket: handshake, every error path, fuzzing."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.registry import MessageInfo, Registry, info, message
from edgeloop.net.session import Hub, Session
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.priority import Priority
from tests import tcp_peer


@message(name="robot.Telemetry")
@dataclass
class Telemetry:
    x: float
    status: str = "ok"


@message(name="legacy.Pose")  # the same schema as robot.Telemetry, another name
@dataclass
class OldTelemetry:
    status: str
    x: float


@message(name="robot.Command", priority=Priority.HIGH, senders=("operator", "admin"))
@dataclass
class Command:
    action: str


GRANTS = [Grant("robot-secret", Role.DEVICE), Grant("op-secret", Role.OPERATOR)]


@dataclass
class Server:
    provider: TcpProvider
    port: int
    delivered: list[tuple[int, str, Any]]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    delivered: list[tuple[int, str, Any]] = []

    def deliver(connection: Session, found: MessageInfo, msg: Any) -> bool:
        delivered.append((connection.id, found.name, msg))
        return True

    hub = Hub("tcp", Registry([Telemetry, Command]), Authenticator(GRANTS), deliver)
    provider = TcpProvider(hub, max_frame_bytes=4096)
    port = await provider.start("127.0.0.1", 0)
    yield Server(provider, port, delivered)
    await provider.close()


class Peer(tcp_peer.Peer):
    async def hello(self, token: str = "robot-secret", role: str = "device") -> dict[str, Any]:
        return await super().hello(token, role)


async def _until(condition: Any, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_hello_welcome_then_messages_are_delivered_typed(server: Server) -> None:
    peer = await Peer.connect(server.port)
    welcome = await peer.hello()
    assert welcome["role"] == "device"
    await peer.send(Telemetry(1.5))
    await _until(lambda: server.delivered)
    assert server.delivered == [(welcome["connection_id"], "robot.Telemetry", Telemetry(1.5))]


async def test_a_renamed_type_routes_by_schema_hash_and_is_counted(server: Server) -> None:
    peer = await Peer.connect(server.port)
    await peer.hello()
    await peer.send(OldTelemetry("ok", 2.0))
    await _until(lambda: server.delivered)
    assert server.delivered[0][2] == Telemetry(2.0, "ok")
    assert server.provider.counters["renamed"] == 1


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (protocol.frame(protocol.encode(Telemetry(1.0))), "not_authenticated"),
        (protocol.frame(b"\xc1garbage"), "not_authenticated"),
        (protocol.frame(msgpack.packb({"not": "a triple"})), "not_authenticated"),
        (struct.pack(">I", 1 << 20), "oversize"),
        (
            protocol.frame(protocol.encode(protocol.Hello("r", "wrong", "device", 1))),
            "auth_failed",
        ),
        (
            protocol.frame(protocol.encode(protocol.Hello("r", "robot-secret", "admin", 1))),
            "auth_failed",
        ),
        (
            protocol.frame(protocol.encode(protocol.Hello("r", "robot-secret", "device", 99))),
            "protocol_version",
        ),
    ],
)
async def test_untrustworthy_streams_get_an_error_frame_and_are_closed(
    server: Server, data: bytes, code: str
) -> None:
    peer = await Peer.connect(server.port)
    await peer.send_raw(data)
    name, payload = await peer.receive()
    assert (name, payload["code"]) == ("edgeloop.Error", code)
    assert await peer.closed_by_server()
    assert server.provider.counters[code] == 1
    survivor = await Peer.connect(server.port)
    await survivor.hello()  # the server keeps serving others


@pytest.mark.parametrize(
    ("msg_bytes", "code", "detail"),
    [
        (msgpack.packb(["robot.Nope", 1, {}]), "unknown_type", "robot.Nope"),
        (
            msgpack.packb(["robot.Telemetry", 7, {"x": 1.0}]),
            "version_mismatch",
            "0x0000000000000007",
        ),
        (
            msgpack.packb(["robot.Telemetry", info(Telemetry).schema_hash, {"x": "fast"}]),
            "bad_payload",
            "x",
        ),
        (protocol.encode(Command("stop")), "forbidden", "role device may not send robot.Command"),
        (
            protocol.encode(protocol.Hello("r", "robot-secret", "device", 1)),
            "bad_sequence",
            "Hello",
        ),
    ],
)
async def test_refused_messages_get_an_error_and_the_connection_stays(
    server: Server, msg_bytes: bytes, code: str, detail: str
) -> None:
    peer = await Peer.connect(server.port)
    await peer.hello()
    await peer.send_raw(protocol.frame(msg_bytes))
    name, payload = await peer.receive()
    assert (name, payload["code"]) == ("edgeloop.Error", code)
    assert detail in payload["detail"]
    await peer.send(Telemetry(3.0))
    await _until(lambda: server.delivered)
    assert server.provider.counters[code] == 1


async def test_operator_may_send_commands(server: Server) -> None:
    peer = await Peer.connect(server.port)
    await peer.hello("op-secret", "operator")
    await peer.send(Command("stop"))
    await _until(lambda: server.delivered)
    assert server.delivered[0][1:] == ("robot.Command", Command("stop"))


async def test_a_silent_peer_is_dropped_after_the_hello_timeout() -> None:
    hub = Hub("tcp", Registry(), Authenticator(GRANTS), lambda *_: True, hello_timeout_s=0.2)
    provider = TcpProvider(hub)
    port = await provider.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    name, payload = await peer.receive()
    assert (name, payload["code"]) == ("edgeloop.Error", "not_authenticated")
    assert await peer.closed_by_server()
    await provider.close()


async def test_a_full_control_side_pauses_reading_and_resume_continues() -> None:
    room = {"open": False}
    delivered: list[Any] = []

    def deliver(connection: Session, found: MessageInfo, msg: Any) -> bool:
        delivered.append(msg)
        return room["open"]

    provider = TcpProvider(Hub("tcp", Registry([Command]), Authenticator(GRANTS), deliver))
    port = await provider.start("127.0.0.1", 0)
    peer = await Peer.connect(port)
    await peer.hello("op-secret", "operator")
    await peer.send_raw(
        b"".join(protocol.frame(protocol.encode(Command(str(i)))) for i in range(5))
    )
    await _until(lambda: delivered)
    (connection,) = provider.connections.values()
    assert connection.paused
    room["open"] = True
    provider.resume_all()
    await _until(lambda: len(delivered) == 5)
    assert [c.action for c in delivered] == ["0", "1", "2", "3", "4"], "none lost, in order"
    await provider.close()


@settings(max_examples=40, deadline=None)
@given(
    junk=st.one_of(
        st.binary(max_size=2000),
        st.builds(
            lambda obj: protocol.frame(msgpack.packb(obj)),
            st.recursive(
                st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4)
                ),
                max_leaves=12,
            ),
        ),
    )
)
def test_fuzzed_bytes_never_take_the_server_down(junk: bytes) -> None:
    async def scenario() -> None:
        hub = Hub("tcp", Registry([Telemetry]), Authenticator(GRANTS), lambda *_: True)
        provider = TcpProvider(hub)
        port = await provider.start("127.0.0.1", 0)
        attacker = await Peer.connect(port)
        await attacker.send_raw(junk)
        honest = await Peer.connect(port)
        await honest.hello()
        assert provider.counters["internal"] == 0
        attacker.writer.close()
        honest.writer.close()
        await provider.close()

    asyncio.run(scenario())


async def test_a_burst_is_handled_in_slices_without_losing_or_reordering(server: Server) -> None:
    peer = await Peer.connect(server.port)
    await peer.hello()
    burst = b"".join(protocol.frame(protocol.encode(Telemetry(float(i)))) for i in range(3000))
    await peer.send_raw(burst)  # one write: far more than one pass handles
    other = await Peer.connect(server.port)
    await other.hello()  # answered while the burst is still being worked through
    await _until(lambda: len(server.delivered) == 3000)
    assert [msg.x for _, _, msg in server.delivered] == [float(i) for i in range(3000)]


async def test_accepted_connections_have_keepalive_so_a_vanished_peer_is_let_go(
    server: Server,
) -> None:
    # A robot whose power was cut never closes its connection; without keepalive the
    # appliance would hold it (and the robot's entity) open for good.
    peer = await Peer.connect(server.port)
    await peer.hello()
    (connection,) = server.provider.connections.values()
    assert connection._transport is not None
    sock = connection._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
    interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
    assert idle + probes * interval <= 30, "a dead peer found within half a minute"
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1000 * (
        idle + probes * interval
    )
    peer.writer.close()
