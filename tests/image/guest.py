"""The appliance image booted under QEMU (TCG), as the boot test sees it.

QEMU runs the disk as a machine would: OVMF firmware, GRUB, the kernel, systemd. The
test reaches it three ways, none of them a login: the serial console (a file), the
forwarded HTTP port (127.0.0.1 only, ``restrict=on``: the guest reaches nothing else),
and the QEMU guest agent on a virtio-serial port, which runs a command in the guest and
returns its output (``Guest.run``). The agent is Debian's qemu-guest-agent, in the image
and idle on hardware: it starts only when the VM's agent port exists.

A reboot in the guest ends its QEMU process (``-no-reboot``) and the guest is started
again in a new one: a power cycle instead of a warm reset. Under TCG a warm reset of
this machine (q35, OVMF, two vCPUs) now and then never came back: after
``reboot: Restarting system`` the console stayed dark with a vCPU spinning, in one run
of four update-test reboots. A new process also starts with a new ICH9 TCO watchdog,
which systemd arms for its reboot (RebootWatchdogSec).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIRMWARE = Path("/usr/share/ovmf/OVMF.fd")
AGENT_PORT = "org.qemu.guest_agent.0"
GUEST_HTTP_PORT = 8080
DIAGNOSIS = (
    "systemctl --failed --no-legend; systemctl list-jobs --no-legend | head -20; "
    "journalctl -b -p warning -o short-monotonic --no-pager | tail -40; "
    "journalctl -b -u 'edgeloop*' -o short-monotonic --no-pager | tail -60"
)


class GuestError(AssertionError):
    """The guest did not do what the test waited for, with what it said."""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def free_port() -> int:
    """A port nobody listens on now, for QEMU's hostfwd (QEMU binds it, not us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Agent:
    """A client of the QEMU guest agent (JSON lines over QEMU's chardev socket)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.next_id = int.from_bytes(os.urandom(3), "big")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self.path))
            self.sock = sock
        return self.sock

    def _read_reply(self, deadline: float) -> dict[str, Any] | None:
        sock = self._connect()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("guest agent socket closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        # A sync reply may be preceded by the agent's 0xff delimiter byte.
        reply: dict[str, Any] = json.loads(line.lstrip(b"\xff") or b"{}")
        return reply

    def sync(self, timeout: float) -> None:
        """Wait until the agent answers; stale replies from before are thrown away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.next_id += 1
            try_until = min(deadline, time.monotonic() + 3)
            try:
                self._send({"execute": "guest-sync", "arguments": {"id": self.next_id}})
                while (reply := self._read_reply(try_until)) is not None:
                    if reply.get("return") == self.next_id:
                        return
            except (OSError, ValueError):
                # No agent yet (QEMU holds the bytes, or the guest rebooted under us).
                self.close()
                time.sleep(max(0.0, try_until - time.monotonic()))
        raise GuestError(f"guest agent did not answer within {timeout:.0f} s")

    def _send(self, message: dict[str, Any]) -> None:
        sock = self._connect()
        sock.settimeout(10)
        sock.sendall(json.dumps(message).encode() + b"\n")

    def call(self, command: str, timeout: float = 30, **arguments: Any) -> Any:
        self._send({"execute": command, "arguments": arguments})
        reply = self._read_reply(time.monotonic() + timeout)
        if reply is None:
            raise GuestError(f"guest agent: no answer to {command} within {timeout} s")
        if "error" in reply:
            raise GuestError(f"guest agent: {command}: {reply['error']}")
        return reply["return"]


class Guest:
    """One QEMU process on one disk; the guest inside may reboot any number of times."""

    def __init__(self, disk: Path, workdir: Path, *, extra_drives: tuple[Path, ...] = ()) -> None:
        self.disk = disk
        self.workdir = workdir
        self.name = f"{time.monotonic_ns()}"
        # One console file per QEMU process (QEMU truncates its file), read as one.
        self.consoles: list[Path] = []
        self.agent_path = workdir / f"qga-{self.name}.sock"
        self.http_port = free_port()
        self.extra_drives = extra_drives
        self.process: subprocess.Popen[bytes] | None = None
        self.agent = Agent(self.agent_path)
        self.powered = False
        self.power_error: GuestError | None = None
        self.lock = threading.Lock()

    @property
    def console(self) -> Path:
        return self.consoles[-1]

    def command(self) -> list[str]:
        qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        drives = [f"file={self.disk},format=raw,if=virtio,cache=unsafe"]
        drives += [f"file={d},format=raw,if=virtio,readonly=on" for d in self.extra_drives]
        return [
            qemu,
            "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "1024",
            "-machine", "q35", "-bios", str(FIRMWARE),
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.console}",
            *(arg for drive in drives for arg in ("-drive", drive)),
            "-netdev", f"user,id=net0,restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{self.http_port}-:{GUEST_HTTP_PORT}",
            "-device", "virtio-net-pci,netdev=net0",
            "-chardev", f"socket,id=qga0,path={self.agent_path},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", f"virtserialport,chardev=qga0,name={AGENT_PORT}",
        ]  # fmt: skip

    def start(self) -> None:
        """Power on; each reboot of the guest powers it on again, until ``kill``."""
        self.powered = True
        process = self._power_on()
        threading.Thread(target=self._power_on_after_reboots, args=(process,), daemon=True).start()

    def _power_on(self) -> subprocess.Popen[bytes] | None:
        with self.lock:
            if not self.powered:
                return None
            # The agent's connection to the QEMU before fails and is made again
            # (Agent.sync); its socket file goes, so that the new QEMU's shows it is up.
            self.agent_path.unlink(missing_ok=True)
            self.consoles.append(self.workdir / f"console-{self.name}-{len(self.consoles)}.log")
            process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            self.process = process
        deadline = time.monotonic() + 30
        while not self.agent_path.exists():
            if process.poll() is not None:
                raise GuestError(f"qemu exited: {process.stderr and process.stderr.read()!r}")
            if time.monotonic() > deadline:
                raise GuestError("qemu made no agent socket within 30 s")
            time.sleep(0.05)
        return process

    def _power_on_after_reboots(self, process: subprocess.Popen[bytes] | None) -> None:
        # -no-reboot: QEMU exits 0 when the guest reboots; a kill is not a reboot.
        try:
            while process is not None and process.wait() == 0:
                process = self._power_on()
        except GuestError as error:
            self.power_error = error

    def kill(self) -> None:
        """A power cut: QEMU is killed, nothing in the guest hears of it."""
        with self.lock:
            self.powered = False
            self.agent.close()
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    def console_text(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in list(self.consoles) if path.exists()
        )

    def wait_console(self, needle: str, timeout: float, *, after: int = 0) -> str:
        """The console from ``after`` once ``needle`` appears there."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()[after:]
            if needle in text:
                return text
            if not self.powered:
                raise GuestError(
                    f"qemu was killed waiting for {needle!r}; console:\n{text[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise GuestError(
                    f"no {needle!r} on the console in {timeout:.0f} s:\n{text[-3000:]}"
                    f"\n{self.diagnose()}"
                )
            time.sleep(0.5)

    def wait_agent(self, timeout: float) -> None:
        if self.power_error is not None:
            raise GuestError(f"the guest rebooted and was not powered on again: {self.power_error}")
        self.agent.close()
        self.agent.sync(timeout)

    def run(self, script: str, timeout: float = 60) -> Result:
        """``sh -c script`` in the guest, as root, through the agent."""
        started = self.agent.call(
            "guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True}
        )
        deadline = time.monotonic() + timeout
        while True:
            status = self.agent.call("guest-exec-status", pid=started["pid"])
            if status["exited"]:
                return Result(
                    code=status.get("exitcode", -1),
                    out=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
                    err=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
                )
            if time.monotonic() > deadline:
                raise GuestError(f"{script!r} still running after {timeout} s")
            time.sleep(0.2)

    def check(self, script: str, timeout: float = 60) -> str:
        """``run`` that must succeed: its stdout."""
        result = self.run(script, timeout)
        if result.code != 0:
            raise GuestError(f"{script!r} exited {result.code}: {result.out}{result.err}")
        return result.out

    def wait_for(self, script: str, timeout: float, *, step: float = 1.0) -> str:
        """Run ``script`` until it succeeds: its stdout."""
        deadline = time.monotonic() + timeout
        last = Result(-1, "", "never ran")
        while time.monotonic() < deadline:
            with contextlib.suppress(GuestError, OSError):
                last = self.run(script, timeout=30)
                if last.code == 0:
                    return last.out
            time.sleep(step)
        raise GuestError(
            f"{script!r} did not succeed in {timeout:.0f} s: {last}\n{self.diagnose()}"
        )

    def diagnose(self) -> str:
        """What the guest's systemd says went wrong, for a failure message."""
        try:
            return self.run(DIAGNOSIS, timeout=60).out
        except (GuestError, OSError) as error:
            return f"(no diagnosis from the guest: {error})"
