"""The supervisor: the main PID. Starts the control and io processes, watches them, and
speaks for the appliance to systemd.

- READY=1 once the control loop ticks and every io worker's event loop beats.
- WATCHDOG=1 at half of WATCHDOG_USEC, and only while the control loop meets its
  deadlines (its last tick ended within ``CONTROL_STALE_PERIODS`` periods) and each io
  worker answers (its heartbeat moved within ``runtime.io_timeout_s``) or is being
  restarted by the supervisor. A stalled loop stops the pings at once, and systemd
  restarts the unit after ``WatchdogSec``. An io hang is the supervisor's to handle, so
  ``io_timeout_s`` (and ``control_timeout_s``) must stay below ``WatchdogSec``: checked
  at start, with a warning.
- A control process that dies, or stays stalled longer than
  ``runtime.control_timeout_s``, ends the supervisor with exit status 1: the World is
  gone or untrustworthy, and only a restart of the whole unit is safe. A stall shorter
  than that (a debugger, a VM pause) is survived: the pings resume with the ticks.
- An io worker (``runtime.io_workers`` of them, usually one) that dies or stops beating
  for ``runtime.io_timeout_s`` is killed and restarted with a new channel, handed to
  the control process, which keeps ticking; the other workers are left alone.
- An io part that cannot do its job (a listener whose port is taken) does not hold back
  READY=1 nor the watchdog pings: the control loop and its safe state run, and a
  restart would not free the port. It is shown instead: the status line says
  ``io degraded`` and ``DEGRADED: <why>`` (and the part raises an alarm) until it works.
- SIGTERM/SIGINT: STOPPING=1, stop control first (it runs Shutdown and sends its last
  outputs), then io, each within ``STOP_TIMEOUT_S`` or killed and reported; exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from edgeloop.config import Config, config_digest
from edgeloop.realtime import child_args
from edgeloop.realtime.heartbeat import Heartbeats, IoSlot, Slot
from edgeloop.realtime.ipc import socketpair
from edgeloop.realtime.notify import Notifier
from edgeloop.realtime.rt_setup import apply_io_settings, plan_cpus
from edgeloop.safety.safe_state import kinds_of

log = logging.getLogger("edgeloop.supervisor")

CHECK_PERIOD_S = 0.02  # health checks; also the resolution of watchdog and status timing
STATUS_PERIOD_S = 1.0
STOP_TIMEOUT_S = 5.0
IO_DRAIN_S = 1.0
CONTROL_STALE_PERIODS = 10  # 100 ms at 100 Hz: a VM hiccup passes, a stall does not
IO_RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0)
IO_STABLE_S = 30.0  # an io process up this long resets the restart backoff


@dataclass(slots=True)
class _Watch:
    """When a heartbeat counter last moved."""

    value: int
    moved_at: float

    def update(self, value: int, now: float) -> None:
        if value != self.value:
            self.value = value
            self.moved_at = now


@dataclass(slots=True)
class _IoWorker:
    """One io process and what the supervisor knows of it."""

    index: int
    proc: subprocess.Popen[bytes]
    started: float
    watch: _Watch
    restarts: int = 0  # in a row, for the back-off; reset once it has run a while
    restart_at: float | None = None  # killed, to be started again then
    fault: str = ""  # why it is degraded, as last read (see Heartbeats.io_fault)
    beats_at_start: int = 0  # the beat counter when this process started: still starting


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        notifier: Notifier | None = None,
        log_level: str = "INFO",
        io_args: tuple[str, ...] = (),
        control_args: tuple[str, ...] = (),
    ) -> None:
        self.config_path = config_path
        self.control_args = control_args
        self.config = config
        self.notifier = Notifier() if notifier is None else notifier
        self.log_level = log_level
        self.io_args = io_args
        self.heartbeats = Heartbeats(io_workers=config.runtime.io_workers)
        # A restarted io worker reads the file again: it runs only what we started with.
        self.config_digest = config_digest(config)
        self.period_s = 1.0 / config.runtime.rate_hz
        self.plan, notes = plan_cpus(config.runtime.cpu)
        for note in notes:
            log.warning("runtime.cpu: %s", note)
        self.io_restarts = 0
        self._stop_requested = False
        self._check_watchdog_margin()
        self._control: subprocess.Popen[bytes] | None = None
        self._io: list[_IoWorker] = []
        self._to_control: socket.socket | None = None

    def _check_watchdog_margin(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        runtime = self.config.runtime
        needed = max(runtime.io_timeout_s, runtime.control_timeout_s) + CHECK_PERIOD_S
        if needed >= 2 * interval:
            log.warning(
                "WatchdogSec=%gs is not above runtime.io_timeout_s/control_timeout_s (%g s): "
                "systemd may restart the appliance before the supervisor can act; raise "
                "WatchdogSec or lower the timeouts",
                2 * interval,
                needed,
            )

    # -- lifecycle ------------------------------------------------------------------------

    def run(self, duration_s: float | None = None) -> int:
        """Supervise until SIGTERM/SIGINT (or ``duration_s``); the exit status to return."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        status = 1  # unless watching ends normally
        try:
            self._start_children()
            # After the children are started: they set their own masks.
            apply_io_settings(self.plan, role="supervisor")
            status = self._watch(wake_r, duration_s)
        finally:
            self.notifier.stopping()
            status = self._stop_children(status)
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            self.notifier.close()
        return status

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stop_requested:
            log.info("%s: stopping", signal.Signals(signum).name)
        self._stop_requested = True

    def _start_children(self) -> None:
        ends = [socketpair() for _ in range(self.config.runtime.io_workers)]
        self._to_control, control_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        control_side.set_inheritable(True)
        self._control = self._spawn(
            "control_process",
            [control_end.fileno() for control_end, _ in ends],
            ["--supervisor-fd", str(control_side.fileno()), *self.control_args],
            extra_fds=(control_side.fileno(),),
        )
        started = time.monotonic()
        for index, (control_end, io_end) in enumerate(ends):
            proc = self._spawn_io(index, io_end)
            self._io.append(
                _IoWorker(
                    index, proc, started, _Watch(0, started + self.config.runtime.startup_timeout_s)
                )
            )
            control_end.close()
            io_end.close()
        control_side.close()

    def _spawn_io(self, index: int, io_end: socket.socket) -> subprocess.Popen[bytes]:
        args = [*self.io_args, "--io-worker", str(index), "--config-digest", self.config_digest]
        return self._spawn("io_process", [io_end.fileno()], args)

    def _spawn(
        self, module: str, io_fds: list[int], args: list[str], extra_fds: tuple[int, ...] = ()
    ) -> subprocess.Popen[bytes]:
        common = child_args.common_args(
            self.config_path, self.heartbeats.fd, io_fds, self.plan, self.log_level
        )
        return subprocess.Popen(
            [sys.executable, "-m", f"edgeloop.realtime.{module}", *common, *args],
            pass_fds=(self.heartbeats.fd, *io_fds, *extra_fds),
            # Own session: a terminal's Ctrl-C reaches only the supervisor, which then
            # stops the children in order (control's last outputs before io goes).
            start_new_session=True,
        )

    # -- watching -------------------------------------------------------------------------

    def _watch(self, wake_r: int, duration_s: float | None) -> int:
        hb = self.heartbeats
        started = time.monotonic()
        control = _Watch(0, started + self.config.runtime.startup_timeout_s)
        ready = False
        interval = self.notifier.watchdog_interval_s
        next_ping = started
        next_status = started
        last_status = (0, started)
        runtime = self.config.runtime
        until = None if duration_s is None else started + duration_s
        while not self._stop_requested and (until is None or time.monotonic() < until):
            select.select([wake_r], [], [], CHECK_PERIOD_S)
            _drain(wake_r)
            now = time.monotonic()
            control.update(hb[Slot.CONTROL_TICKS], now)
            failure = self._control_failure(control, now, runtime.control_timeout_s)
            if failure:
                log.critical("%s: exiting so that systemd restarts the appliance", failure)
                return 1
            io_healthy = all([self._check_io(io, now, runtime.io_timeout_s) for io in self._io])
            healthy = self._control_healthy() and io_healthy
            if not ready and control.value > 0 and all(io.watch.value > 0 for io in self._io):
                ready = True
                self.notifier.ready(self._status(last_status, now))
                log.info("ready: %s", self._status(last_status, now))
            # Only a ping sent moves the next one on: after a brief unhealthy moment the
            # ping goes out at the next check, not a whole interval later.
            if interval is not None and ready and now >= next_ping and healthy:
                next_ping = now + interval
                self.notifier.watchdog()
            if ready and now >= next_status:
                next_status = now + STATUS_PERIOD_S
                self.notifier.status(self._status(last_status, now))
                last_status = (control.value, now)
        return 0

    def _check_io(self, io: _IoWorker, now: float, timeout_s: float) -> bool:
        """Restart an io worker that failed, once its back-off has passed; False while
        it is silent and not (yet) being restarted."""
        io.watch.update(self.heartbeats.io(io.index, IoSlot.BEATS), now)
        if io.restart_at is not None:
            if now >= io.restart_at:
                io.restart_at = None
                self._start_io(io)
            # While an io worker is being restarted its silence is handled.
            return True
        if self._io_failed(io, now, timeout_s):
            io.restart_at = now + self._kill_io(io, now)
            return True
        return now - io.watch.moved_at <= timeout_s

    def _control_failure(self, control: _Watch, now: float, timeout_s: float) -> str | None:
        assert self._control is not None
        code = self._control.poll()
        if code is not None:
            return f"control process exited with status {code}"
        if now - control.moved_at > timeout_s:
            _kill(self._control)
            return f"control loop stalled for more than {timeout_s:g} s (runtime.control_timeout_s)"
        return None

    def _io_failed(self, io: _IoWorker, now: float, timeout_s: float) -> bool:
        name = self._io_name(io)
        code = io.proc.poll()
        if code is not None:
            log.error("%s exited with status %s; restarting it", name, code)
            return True
        if now - io.watch.moved_at > timeout_s:
            log.error("%s silent for %g s (runtime.io_timeout_s); restarting it", name, timeout_s)
            return True
        return False

    def _io_name(self, io: _IoWorker) -> str:
        return "io process" if len(self._io) == 1 else f"io worker {io.index}"

    def _control_healthy(self) -> bool:
        """The control loop's last tick ended recently: it meets its deadlines."""
        tick_age_s = (time.monotonic_ns() - self.heartbeats[Slot.CONTROL_TICK_NS]) / 1e9
        return tick_age_s <= max(CONTROL_STALE_PERIODS * self.period_s, 2 * CHECK_PERIOD_S)

    def _kill_io(self, io: _IoWorker, now: float) -> float:
        """Kill an io worker; returns the back-off before starting a new one."""
        _kill(io.proc)
        if now - io.started >= IO_STABLE_S:
            io.restarts = 0
        # A crash-looping io process must not spin the supervisor (or the log).
        return IO_RESTART_BACKOFF_S[min(io.restarts, len(IO_RESTART_BACKOFF_S) - 1)]

    def _start_io(self, io: _IoWorker) -> None:
        """A new io worker on a new channel, whose control end goes to the control process."""
        assert self._to_control is not None
        control_end, io_end = socketpair()
        socket.send_fds(self._to_control, [f"io {io.index}".encode()], [control_end.fileno()])
        io.proc = self._spawn_io(io.index, io_end)
        control_end.close()
        io_end.close()
        io.started = time.monotonic()
        io.beats_at_start = self.heartbeats.io(io.index, IoSlot.BEATS)
        io.watch = _Watch(io.beats_at_start, io.started + self.config.runtime.startup_timeout_s)
        io.restarts += 1
        self.io_restarts += 1
        log.warning("%s restarted (%d restarts so far)", self._io_name(io), self.io_restarts)

    def _status(self, last: tuple[int, float], now: float) -> str:
        hb = self.heartbeats
        ticks = hb[Slot.CONTROL_TICKS]
        elapsed = now - last[1]
        rate = (ticks - last[0]) / elapsed if elapsed > 0 and last[0] else 1 / self.period_s
        # A worker being restarted has none, whatever its last process wrote.
        connections = sum(
            hb.io(io.index, IoSlot.CONNECTIONS) for io in self._io if io.restart_at is None
        )
        problems = self._io_faults()  # first: the io part of the line shows them too
        parts = [
            f"{rate:.1f} Hz",
            f"tick {ticks}",
            f"p99 lateness {hb[Slot.CONTROL_P99_LATENESS_NS] // 1000} µs",
            f"{hb[Slot.CONTROL_OVERRUNS]} overruns",
            self._io_status(),
            f"{connections} connections",
        ]
        changed = [str(io.index) for io in self._io if hb.io(io.index, IoSlot.CONFIG_CHANGED)]
        if changed:
            parts.append(
                f"CONFIG CHANGED on disk: io worker {', '.join(changed)} idle until restart"
            )
        held = hb[Slot.SAFE_STATE]
        if held:
            parts.append(f"SAFE STATE: {', '.join(kinds_of(held))}")
        settings = hb[Slot.CONTROL_DEGRADED] + hb.io_total(IoSlot.DEGRADED)
        if settings:
            problems.append(f"{settings} real-time setting(s) not applied, see log")
        if problems:
            parts.append(f"DEGRADED: {'; '.join(problems)}")
        return ", ".join(parts)

    def _io_faults(self) -> list[str]:
        """What the running io workers say does not work (a listener that cannot bind)."""
        faults: list[str] = []
        for io in self._io:
            text = self.heartbeats.io_fault(io.index)
            if text is None:  # being written just then: what it said a moment ago
                text = io.fault
            io.fault = text
            if text and io.restart_at is None and text not in faults:
                faults.append(text)
        return faults

    def _io_status(self) -> str:
        up = self.heartbeats[Slot.IO_LINKS_UP]
        degraded = any(io.fault and io.restart_at is None for io in self._io)
        if len(self._io) == 1:
            return f"io {'down' if not up else 'degraded' if degraded else 'up'}"
        return f"io {up}/{len(self._io)} up{', degraded' if degraded else ''}"

    # -- stopping -------------------------------------------------------------------------

    def _stop_children(self, status: int) -> int:
        if self._control is not None and self._control.poll() is None:
            starting = self.heartbeats[Slot.CONTROL_TICKS] == 0  # no Startup run yet
            status = _stop(
                self._control, "control process", STOP_TIMEOUT_S, status, starting=starting
            )
        # The io workers stop by themselves once control has closed their channels
        # (after control's last outputs reached them); a signal now could cut that
        # short. Then together, against one deadline: N hung workers must not take N
        # times systemd's patience.
        drained_by = time.monotonic() + IO_DRAIN_S
        for io in self._io:
            with contextlib.suppress(subprocess.TimeoutExpired):
                io.proc.wait(max(0.0, drained_by - time.monotonic()))
        running = [io for io in self._io if io.proc.poll() is None]
        for io in running:
            io.proc.terminate()
        stopped_by = time.monotonic() + STOP_TIMEOUT_S
        for io in running:
            # One still importing has no handler for SIGTERM yet, and nothing to lose.
            starting = self.heartbeats.io(io.index, IoSlot.BEATS) == io.beats_at_start
            timeout_s = stopped_by - time.monotonic()
            status = _stop(io.proc, self._io_name(io), timeout_s, status, starting=starting)
        if self._to_control is not None:
            self._to_control.close()
        self.heartbeats.close()
        return status


def _stop(
    child: subprocess.Popen[bytes],
    name: str,
    timeout_s: float,
    status: int,
    *,
    starting: bool = False,
) -> int:
    """Terminate ``child`` (running when it was asked to stop) and wait up to
    ``timeout_s``; the exit status to report, made 1 by a child that had to be killed or
    failed while stopping. ``starting``: it has not run yet, and SIGTERM's default
    action ending it is a clean stop."""
    child.terminate()
    try:
        code = child.wait(max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        log.error("%s did not stop within %g s; killed", name, STOP_TIMEOUT_S)
        _kill(child)
        return status or 1
    if code == -signal.SIGTERM and starting:
        log.info("%s stopped during its start-up", name)
        return status
    if code != 0:
        log.error("%s exited with status %d while stopping", name, code)
        return status or 1
    return status


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
