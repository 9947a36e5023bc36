"""A throwaway PostgreSQL cluster (Debian's package) for a test: initdb in the test's
directory, listening on a unix socket there only (no TCP), stopped and started at will.

PostgreSQL refuses to run as root; as root the cluster is made and run as ``nobody``
(``setpriv``), its directory handed to that user first.
"""

from __future__ import annotations

import glob
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

PACKAGE = "postgresql"  # deps/debian-packages.txt
START_S = 30.0
USER = "nobody"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"PostgreSQL is not installed: apt-get install {PACKAGE} (or make deps)")
    return found[-1]


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(USER)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


class Postgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.log = directory / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(USER)
            for path in (directory, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
            for parent in directory.parents:  # nobody must reach its directory
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        subprocess.run(
            [*_as_user(), _bin("initdb"), "-D", str(self.data), "-U", "edgeloop",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip

    @property
    def conninfo(self) -> str:
        return f"host={self.sockets} port=5432 user=edgeloop dbname=postgres"

    def start(self) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_as_user(), _bin("postgres"), "-D", str(self.data), "-k", str(self.sockets),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-p", "5432"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )  # fmt: skip
        give_up = time.monotonic() + START_S
        while True:
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", str(self.sockets), "-p", "5432", "-q"],
                check=False,
                timeout=10,
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"postgres exited: {self.log.read_text(errors='replace')[-2000:]}")
            assert time.monotonic() < give_up, "postgres did not start"
            time.sleep(0.05)  # polling pg_isready; the deadline bounds it

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: PostgreSQL's fast shutdown (clients cut off, committed data kept)."""
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
