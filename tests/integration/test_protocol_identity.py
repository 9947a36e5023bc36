"""Who may speak for a robot: first come while connected, or a token bound to client
ids in config. An imposter's telemetry is refused (``not_owner``) and counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from edgeloop.config import ConfigError, load_config
from edgeloop.net.auth import Authenticator
from edgeloop.net.client import Client
from edgeloop.net.plugin import NetworkConfig
from edgeloop.net.protocol import Error, Subscribe, WorldUpdate
from edgeloop.net.registry import MessageInfo, ProtocolError, Registry
from edgeloop.net.session import Hub, Session
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.sim.robots import Telemetry
from tests.integration.protocol_appliance import TIMEOUT_S, connect, receive, running_appliance

TOKENS = """\
    - {token: robot-token-0123456789, role: device}
    - {token: viewer-token-0123456789, role: viewer}
"""
ROBOT = "robot-token-0123456789"
VIEWER = "viewer-token-0123456789"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_appliance(tmp_path_factory.mktemp("appliance"), TOKENS) as (tcp, _):
        yield tcp


@dataclass
class WorldView:
    """A viewer's picture of the robots, from its WorldUpdates."""

    client: Client
    names: dict[int, str] = field(default_factory=dict)
    robots: dict[int, dict[str, Any]] = field(default_factory=dict)

    def robot(self, name: str) -> dict[str, Any] | None:
        for entity, found in self.names.items():
            if found == name:
                return self.robots.get(entity)
        return None

    async def until(self, name: str, condition: Callable[[dict[str, Any]], bool]) -> None:
        """Read updates until robot ``name`` meets ``condition``; every value it took on
        the way is checked against ``never``."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT_S
        while True:
            found = self.robot(name)
            if found is not None and condition(found):
                return
            assert asyncio.get_running_loop().time() < deadline, f"{name}: {found}"
            update = await receive(self.client, WorldUpdate)
            for change in update.changed:
                if change.component == "Name":
                    self.names[change.entity] = change.values["value"]
                elif change.component == "Robot":
                    self.robots[change.entity] = change.values
                    assert change.values["position"] != IMPOSTER_POSITION, change


IMPOSTER_POSITION = 666.0


async def _viewer(port: int) -> WorldView:
    client = Client(
        "127.0.0.1",
        port,
        client_id="viewer",
        token=VIEWER,
        role="viewer",
        message_types=(Subscribe, WorldUpdate),
    )
    await client.connect()
    await client.send(Subscribe("world", components=["Name", "Robot"]))
    return WorldView(client)


async def test_a_second_device_cannot_take_over_a_connected_robot(port: int) -> None:
    robot = await connect(port, "robot-1", ROBOT, "device")
    imposter = await connect(port, "robot-9", ROBOT, "device")
    view = await _viewer(port)
    await robot.send(Telemetry("robot-1", 1.0, 0.0, 35.0, "idle"))
    await view.until("robot-1", lambda r: r["position"] == 1.0)

    await imposter.send(Telemetry("robot-1", IMPOSTER_POSITION, 0.0, 99.0, "moving"))
    error = await receive(imposter, Error)
    assert error.code == "not_owner"
    assert "robot-1" in error.detail
    # The real robot's next value arrives, and no update ever showed the imposter's.
    await robot.send(Telemetry("robot-1", 2.0, 0.0, 35.0, "idle"))
    await view.until("robot-1", lambda r: r["position"] == 2.0)
    now = view.robot("robot-1") or {}
    assert (now["connection"], now["status"]) == (robot.connection_id, "idle")

    # Gone: the entity stays, in fault with no connection; then the other may take it.
    await robot.close()
    await view.until("robot-1", lambda r: r["connection"] == 0)
    assert view.robot("robot-1")["status"] == "fault"  # type: ignore[index]
    await imposter.send(Telemetry("robot-1", 3.0, 0.0, 36.0, "moving"))
    await view.until("robot-1", lambda r: r["connection"] == imposter.connection_id)
    assert view.robot("robot-1")["position"] == 3.0  # type: ignore[index]
    await imposter.close()
    await view.client.close()


# -- tokens bound to client ids (the io side, no control loop needed) ---------------------


@dataclass
class Server:
    provider: TcpProvider
    port: int
    delivered: list[Any]


BOUND = """
- {token: arm-1-token-0123456789, role: device, client_ids: [arm-1]}
- {token: gateway-token-0123456789, role: device, client_ids: [gw, arm-2, arm-3]}
- {token: any-device-token-0123456789, role: device}
"""


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    config = NetworkConfig.model_validate({"tokens": yaml.safe_load(BOUND)})
    delivered: list[Any] = []

    def deliver(session: Session, found: MessageInfo, msg: Any) -> bool:
        delivered.append(msg)
        return True

    hub = Hub(
        "tcp", Registry([Telemetry]), Authenticator([t.grant() for t in config.tokens]), deliver
    )
    provider = TcpProvider(hub)
    yield Server(provider, await provider.start("127.0.0.1", 0), delivered)
    await provider.close()


def _client(port: int, client_id: str, token: str) -> Client:
    return Client(
        "127.0.0.1",
        port,
        client_id=client_id,
        token=token,
        role="device",
        message_types=(Telemetry,),
    )


@pytest.mark.parametrize(
    ("client_id", "token"),
    [
        ("arm-9", "arm-1-token-0123456789"),  # not one of the token's ids
        ("arm-1", "any-device-token-0123456789"),  # bound to another token
        ("arm-1", "gateway-token-0123456789"),
    ],
)
async def test_a_bound_client_id_is_refused_to_other_tokens_in_hello(
    server: Server, client_id: str, token: str
) -> None:
    with pytest.raises(ProtocolError, match=r"auth_failed: the token does not grant client id"):
        await _client(server.port, client_id, token).connect()
    assert server.provider.counters["auth_failed"] == 1


async def test_a_bound_token_speaks_for_its_ids_only(server: Server) -> None:
    gateway = _client(server.port, "gw", "gateway-token-0123456789")
    await gateway.connect()
    await gateway.send(Telemetry("arm-2", 1.0, 0.0, 35.0, "idle"))
    await gateway.send(Telemetry("arm-1", 1.0, 0.0, 35.0, "idle"))  # arm-1-token's
    await gateway.send(Telemetry("arm-7", 1.0, 0.0, 35.0, "idle"))  # not the gateway's
    await gateway.send(Telemetry("arm-3", 1.0, 0.0, 35.0, "idle"))
    errors = [await asyncio.wait_for(gateway.receive(), TIMEOUT_S) for _ in range(2)]
    assert [(e.code, e.detail.split()[-1]) for e in errors] == [
        ("not_owner", "'arm-1'"),
        ("not_owner", "'arm-7'"),
    ]
    await _until(lambda: len(server.delivered) >= 2)
    assert [t.robot_id for t in server.delivered] == ["arm-2", "arm-3"]
    assert server.provider.counters["not_owner"] == 2
    await gateway.close()


async def test_an_unbound_token_cannot_speak_for_a_bound_id(server: Server) -> None:
    device = _client(server.port, "somebody", "any-device-token-0123456789")
    await device.connect()
    await device.send(Telemetry("arm-1", 1.0, 0.0, 35.0, "idle"))
    error = await asyncio.wait_for(device.receive(), TIMEOUT_S)
    assert (error.code, server.provider.counters["not_owner"]) == ("not_owner", 1)
    await device.close()


def test_a_client_id_bound_to_two_tokens_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """
network:
  tokens:
    - {token: first-token-0123456789, role: device, client_ids: [arm-1]}
    - {token: second-token-0123456789, role: device, client_ids: [arm-2, arm-1]}
"""
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "tokens[1].client_ids: 'arm-1' is bound to tokens[0]" in str(raised.value.problems)


async def _until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
