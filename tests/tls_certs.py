"""Certificates for a test's TLS server, made by the openssl CLI (Debian's ``openssl``,
deps/debian-packages.txt) in the test's directory: a CA, and a server certificate it
signs for 127.0.0.1. ``cryptography`` is not a dependency of edgeloop; openssl is."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = "2"


@dataclass(frozen=True, slots=True)
class ServerCert:
    ca: Path  # the CA's certificate: what a client trusts
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl is not installed: apt-get install openssl (or make deps)")
    done = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"openssl {args[0]}: {done.stderr}"


def make_ca(directory: Path, name: str = "test-ca") -> tuple[Path, Path]:
    """A self-signed CA in ``directory``: its certificate and key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", DAYS, "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def server_cert(directory: Path, host: str = "127.0.0.1") -> ServerCert:
    """A CA and a server certificate it signed for ``host`` (an IP address SAN)."""
    ca, ca_key = make_ca(directory)
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName=IP:{host}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={host}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", DAYS, "-extfile", extensions)  # fmt: skip
    return ServerCert(ca, cert, key)
