"""TLS on both providers, with a certificate made for the test by openssl."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from edgeloop.config import ConfigError, parse_config_text
from edgeloop.net import protocol
from edgeloop.net.auth import Authenticator, Grant, Role
from edgeloop.net.client import Client
from edgeloop.net.plugin import SECTION, TlsFiles
from edgeloop.net.registry import Registry
from edgeloop.net.session import Hub
from edgeloop.net.tcp_provider import TcpProvider
from edgeloop.net.ws_provider import WebSocketProvider

GRANTS = [Grant("robot-secret-0123456789", Role.DEVICE)]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def _ignore(*_: Any) -> bool:
    return True


async def test_tcp_with_tls_says_hello_and_refuses_plain_peers(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    provider = TcpProvider(Hub("tcp", Registry(), Authenticator(GRANTS), _ignore))
    port = await provider.start(
        "127.0.0.1", 0, tls=TlsFiles(cert_file=cert, key_file=key).context()
    )
    try:
        plain = Client(
            "127.0.0.1", port, client_id="r", token="robot-secret-0123456789", role="device"
        )
        with pytest.raises((ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError)):
            await asyncio.wait_for(plain.connect(), 5)
        await plain.close()
        secure = Client(
            "127.0.0.1",
            port,
            client_id="r",
            token="robot-secret-0123456789",
            role="device",
            tls=_client_context(cert),
        )
        welcome = await asyncio.wait_for(secure.connect(), 10)
        assert welcome.role == "device"
        await secure.close()
    finally:
        await provider.close()


async def test_websocket_with_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    provider = WebSocketProvider(Hub("ws", Registry(), Authenticator(GRANTS), _ignore))
    port = await provider.start(
        "127.0.0.1", 0, tls=TlsFiles(cert_file=cert, key_file=key).context()
    )
    try:
        async with connect(f"wss://127.0.0.1:{port}/ws", ssl=_client_context(cert)) as ws:
            await ws.send(
                protocol.encode(protocol.Hello("hmi", "robot-secret-0123456789", "device", 1))
            )
            answer = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(answer, bytes) and protocol.split(answer)[0] == "edgeloop.Welcome"
    finally:
        await provider.close()


def test_a_certificate_that_does_not_load_is_a_config_error_on_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    text = f"network:\n  tls:\n    cert_file: {bad}\n    key_file: {bad}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, tmp_path / "config.yaml", [SECTION])
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert "network.tls: cannot load the certificate and key" in problem.message
