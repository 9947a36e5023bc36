"""A real Mosquitto (Debian's package) for a test: its own config in the test's
directory, listening on 127.0.0.1 only, no persistence, stopped and started at will.

Mosquitto cannot listen on port 0 and say which port it got, so the port is one the
kernel gave a socket bound to 127.0.0.1:0 a moment before; a restart reuses it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.tls_certs import ServerCert

START_S = 20.0
PACKAGE = "mosquitto"  # deps/debian-packages.txt


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"mosquitto is not installed: apt-get install {PACKAGE} (or make deps)")
    return found


def _password_file(directory: Path, users: dict[str, str]) -> Path:
    path = directory / "passwords"
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, f"mosquitto_passwd is not installed: apt-get install {PACKAGE}"
    for user, password in users.items():
        create = [] if path.exists() else ["-c"]
        subprocess.run([tool, *create, "-b", str(path), user, password], check=True,
                       capture_output=True)  # fmt: skip
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """``tls``: a TLS listener with that certificate; ``users``: only these user names
    and passwords may connect (a password file made by mosquitto_passwd)."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: ServerCert | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1"]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        if users is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {_password_file(directory, users)}"]
        if tls is not None or users is not None:
            # run as root (a test box), it would read those files as user mosquitto
            lines.append("user root")
        self.config.write_text(
            "\n".join(lines) + "\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1
        give_up = time.monotonic() + START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text(errors='replace')[-2000:]}")
            assert time.monotonic() < give_up, "mosquitto did not listen"
            time.sleep(0.02)  # polling a port; the deadline bounds it

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
