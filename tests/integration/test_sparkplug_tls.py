"""The edge node to a real Mosquitto on a TLS listener that wants a user name and a
password: the CA and the broker's certificate are made in the test's directory
(openssl), the login comes from the config. A CA that did not sign the broker's
certificate, or a wrong password, is refused with an error that says which."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from edgeloop.uplink.sparkplug_node import SOURCE, SparkplugNode
from tests.integration.test_sparkplug import START, config
from tests.mqtt_broker import Mosquitto
from tests.sparkplug_host import Host, NodeContext, until
from tests.tls_certs import ServerCert, make_ca, server_cert

USERS = {"edge": "edge-secret", "scada": "scada-secret"}


def _broker(tmp_path: Path) -> tuple[Mosquitto, ServerCert]:
    certs = server_cert(tmp_path / "pki")
    return Mosquitto(tmp_path / "broker", tls=certs, users=USERS), certs


def _node(tmp_path: Path, port: int, **broker: Any) -> tuple[SparkplugNode, NodeContext]:
    context = NodeContext(tmp_path / "state")
    chosen = config(port)
    said = chosen.model_dump()
    said["broker"].update(tls=True, username="edge", **broker)
    node = SparkplugNode(type(chosen).model_validate(said), context)  # type: ignore[arg-type]
    context.feed(START)
    return node, context


async def test_the_node_publishes_over_tls_with_the_configured_login(tmp_path: Path) -> None:
    mosquitto, certs = _broker(tmp_path)
    trusted = ssl.create_default_context(cafile=certs.ca)
    with mosquitto:
        async with Host(mosquitto.port, tls_context=trusted, username="scada",
                        password=USERS["scada"]) as host:  # fmt: skip
            node, context = _node(tmp_path, mosquitto.port, ca_file=certs.ca,
                                  password=USERS["edge"])  # fmt: skip
            await node.start()
            try:
                await until(lambda: node.live and host.of("DBIRTH"), "the births over TLS")
            finally:
                await node.stop()
    assert [r.verb for r in host.of("NBIRTH", "DBIRTH")] == ["NBIRTH", "DBIRTH"]
    assert context.said.get(SOURCE) is None


async def test_a_ca_that_did_not_sign_the_brokers_certificate_is_refused_clearly(
    tmp_path: Path,
) -> None:
    mosquitto, _ = _broker(tmp_path)
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    with mosquitto:
        node, context = _node(tmp_path, mosquitto.port, ca_file=other_ca, password=USERS["edge"])
        await node.start()
        try:
            await until(lambda: context.said.get(SOURCE) is not None, "the refusal")
            assert not node.live
        finally:
            await node.stop()
    said = context.said[SOURCE] or ""
    assert f"not trusted by broker.ca_file {other_ca}" in said, said
    assert "CERTIFICATE_VERIFY_FAILED" in said


async def test_a_wrong_password_is_refused_clearly(tmp_path: Path) -> None:
    mosquitto, certs = _broker(tmp_path)
    with mosquitto:
        node, context = _node(tmp_path, mosquitto.port, ca_file=certs.ca, password="wrong")
        await node.start()
        try:
            await until(lambda: context.said.get(SOURCE) is not None, "the refusal")
            assert not node.live
        finally:
            await node.stop()
    assert "refused broker.username/broker.password" in (context.said[SOURCE] or "")


async def test_a_missing_ca_file_is_said_and_retried_not_a_crash(tmp_path: Path) -> None:
    mosquitto, _ = _broker(tmp_path)
    missing = tmp_path / "no-such-ca.crt"
    with mosquitto:
        node, context = _node(tmp_path, mosquitto.port, ca_file=missing, password=USERS["edge"])
        await node.start()
        try:
            await until(lambda: context.said.get(SOURCE) is not None, "the refusal")
            assert not node._tasks[0].done(), "the session goes on, retrying"
        finally:
            await node.stop()
    assert f"broker.ca_file {missing}" in (context.said[SOURCE] or "")
