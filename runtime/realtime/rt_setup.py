"""Real-time process settings: CPU pinning, SCHED_FIFO, mlockall, gc freeze, names.

Every setting is best effort. One that cannot be applied comes back as a note saying what
to change (a capability, an rlimit, a config key), logged once at start-up: an appliance
without RT privileges still runs, only with more jitter, and the journal says why.

Linux only (prctl, mlockall, sched_setaffinity); stdlib and ctypes, no extension module.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import resource
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("edgeloop.rt")

# prctl(2) options, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
# The kernel keeps 16 bytes of task name, the last one a NUL.
TASK_COMM_LEN = 15
# mlockall(2) flags for x86, ARM and RISC-V (powerpc, sparc and alpha use other values).
MCL_CURRENT = 1
MCL_FUTURE = 2
# Bits of the CapEff mask in /proc/self/status, from <linux/capability.h>.
CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23
# runtime.rt_priority 0 means "stay SCHED_OTHER"; 1..99 is the SCHED_FIFO range.
RT_PRIORITY_OFF = 0
RT_PRIORITY_MAX = 99

ONE_CPU_NOTE = (
    "only one CPU available: the control loop shares it with the io process "
    "(use a machine with 2+ cores)"
)


@dataclass(frozen=True, slots=True)
class CpuPlan:
    control: int | None  # CPU for the control process, None = don't pin
    others: frozenset[int]  # CPUs for the supervisor and io process (all but control)

    def __post_init__(self) -> None:
        if self.control is not None and self.control in self.others:
            raise ValueError(f"cpu {self.control} is both the control core and an io core")


@dataclass(frozen=True, slots=True)
class RtReport:
    applied: tuple[str, ...]  # e.g. ("cpu 1", "SCHED_FIFO 50", "mlockall")
    degraded: tuple[str, ...]  # one note per setting that could not be applied


NO_PINNING = CpuPlan(control=None, others=frozenset())


def plan_cpus(
    setting: int | Literal["auto"] | None,
    available: frozenset[int] | None = None,
    isolated: frozenset[int] | None = None,
) -> tuple[CpuPlan, list[str]]:
    """Which CPU the control process gets, and which the rest of the appliance keeps.

    None: no pinning. "auto": the highest-numbered isolated CPU if the kernel isolates
    any, else the highest-numbered available CPU (CPU 0 takes most interrupts and
    housekeeping by default), is the control core, the rest are others. An int: that
    CPU, or no pinning and a note when it is neither available nor isolated. With a
    single CPU nothing is pinned: the io process would otherwise be shut out of the only
    core. ``available`` defaults to this process's affinity mask, ``isolated`` to the
    kernel's ``isolcpus=`` (the image's control core): isolated CPUs are in no process's
    default mask, yet a process may pin itself there.
    """
    if setting is None:
        return NO_PINNING, []
    cpus = frozenset(os.sched_getaffinity(0)) if available is None else available
    kept = isolated_cpus() if isolated is None else isolated
    if setting == "auto" and kept - cpus:
        setting = max(kept - cpus)
    if setting != "auto" and setting not in cpus and setting in kept:
        cpus = cpus | {setting}
    if setting != "auto" and setting not in cpus:
        return NO_PINNING, [
            f"runtime.cpu: {setting} is not an available CPU (available: {cpu_list(cpus)}); "
            "set runtime.cpu to one of them, 'auto' or null"
        ]
    if len(cpus) < 2:
        return NO_PINNING, [ONE_CPU_NOTE]
    control = max(cpus) if setting == "auto" else setting
    return CpuPlan(control=control, others=cpus - {control}), []


def isolated_cpus(path: str = "/sys/devices/system/cpu/isolated") -> frozenset[int]:
    """The CPUs the kernel keeps out of scheduling (``isolcpus=``); none when unknown."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return frozenset()
    return parse_cpu_list(text)


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0-2,5`` (the kernel's CPU list format) as a set."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def cpu_list(cpus: Iterable[int]) -> str:
    """CPUs the way the kernel and taskset print them: ``0-2,5``."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def set_process_name(name: str) -> None:
    """Name this process (``/proc/self/comm``) so ps, top and chrt show e.g. 'edgeloop-ctl'.

    The kernel keeps 15 bytes; longer names are cut there. Never raises: a process with
    the interpreter's name still works.
    """
    comm = _comm_bytes(name)
    if _prctl(PR_SET_NAME, ctypes.c_char_p(comm)) == 0:
        return
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(comm)
    except OSError as error:
        log.debug("cannot set the process name to %r: %s", name, error)


def _comm_bytes(name: str) -> bytes:
    # Cut at a character boundary, so ps never shows half a UTF-8 sequence.
    return name.encode()[:TASK_COMM_LEN].decode(errors="ignore").encode()


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies.

    A child then never outlives a SIGKILLed supervisor (it would keep driving outputs
    with nobody watching). Call it first thing after fork with ``parent`` = the pid the
    parent had before forking: a parent that died before the prctl sends no signal, so
    that case is caught by comparing pids and signalling ourselves.
    """
    if _prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig)) != 0:
        log.debug("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def pin_to(cpus: Iterable[int]) -> str | None:
    """Restrict this process to ``cpus``; a note saying what to change when refused."""
    wanted = frozenset(cpus)
    try:
        os.sched_setaffinity(0, wanted)
    except OSError as error:
        allowed = cpu_list(os.sched_getaffinity(0))
        return (
            f"cpu {cpu_list(wanted) or '(none)'}: sched_setaffinity refused "
            f"({_errno_name(error.errno)}); this process may run on {allowed} only "
            "(cgroup cpuset, taskset, systemd CPUAffinity=): set runtime.cpu to one of "
            "them, 'auto' or null"
        )
    return None


def set_fifo(priority: int, key: str = "rt_priority") -> str | None:
    """Run this process under SCHED_FIFO at ``priority``; 0 leaves it SCHED_OTHER.
    ``key``: the ``runtime`` setting that asked for it, named in the note."""
    if not RT_PRIORITY_OFF <= priority <= RT_PRIORITY_MAX:
        raise ValueError(f"{key} {priority}: outside 0..99 (0 turns SCHED_FIFO off)")
    if priority == RT_PRIORITY_OFF:
        return None
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as error:
        return _fifo_note(priority, error, key)
    return None


def _fifo_note(priority: int, error: OSError, key: str) -> str:
    refused = f"{key} {priority}: SCHED_FIFO refused ({_errno_name(error.errno)}"
    off = f"or set runtime.{key}: {RT_PRIORITY_OFF}"
    if error.errno != errno.EPERM:
        return f"{refused}: {error.strerror}); {off}"
    if _has_capability(CAP_SYS_NICE):
        # Allowed by capability yet refused: RT group scheduling gives the cgroup no
        # real-time budget (cpu.rt_runtime_us = 0), typically once CPUQuota= or
        # CPUWeight= enable the cpu controller.
        return (
            f"{refused} with CAP_SYS_NICE): the cgroup has no real-time budget; drop "
            f"CPUQuota=/CPUWeight= from the unit or give it cpu.rt_runtime_us, {off}"
        )
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    return (
        f"{refused}, RLIMIT_RTPRIO is {_limit(soft)}): grant CAP_SYS_NICE "
        f"(AmbientCapabilities=CAP_SYS_NICE) or LimitRTPRIO={priority} or higher, {off}"
    )


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT | MCL_FUTURE): no page fault to disk ever stalls a tick.

    The advice on failure is LimitMEMLOCK=infinity, not a larger number: with MCL_FUTURE
    every later allocation counts against the limit, and one past it fails (MemoryError).
    """
    libc = _libc()
    if libc is None:
        return "mlockall: libc not reachable through ctypes; set runtime.lock_memory: false"
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
        return None
    code = ctypes.get_errno()
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return (
        f"mlockall refused ({_errno_name(code)}, RLIMIT_MEMLOCK is {_limit(soft, 'bytes')}): "
        "grant CAP_IPC_LOCK (AmbientCapabilities=CAP_IPC_LOCK) or set LimitMEMLOCK=infinity, "
        "or set runtime.lock_memory: false"
    )


def freeze_gc() -> None:
    """Collect, move every survivor to the permanent generation, and stop automatic gc.

    Called by the loop after start-up: the tick then never runs a full collection over
    the start-up heap; young objects are collected in the slack by ``collect_young``.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def collect_young() -> int:
    """Collect generation 0 only (bounded by what one tick allocates); unreachable count."""
    return gc.collect(0)


def apply_control_settings(cpu: CpuPlan, rt_priority: int, lock: bool) -> RtReport:
    """Settings of the control process: its core, SCHED_FIFO, mlockall.

    The garbage collector is not touched here: freezing must wait until start-up has
    built the World, so the control loop calls ``freeze_gc`` itself. Memory is locked
    before SCHED_FIFO is set, so faulting in every page (tens of ms) does not run at RT
    priority, where it would starve the kernel threads bound to the control core.
    """
    steps: list[tuple[str, str | None]] = []
    if cpu.control is not None:
        steps.append((f"cpu {cpu.control}", pin_to([cpu.control])))
    if lock:
        steps.append(("mlockall", lock_memory()))
    if rt_priority != RT_PRIORITY_OFF:
        steps.append((f"SCHED_FIFO {rt_priority}", set_fifo(rt_priority)))
    return _report("control", steps)


def apply_io_settings(cpu: CpuPlan, role: str = "io") -> RtReport:
    """Settings of the supervisor and io process: keep off the control core, if any."""
    steps: list[tuple[str, str | None]] = []
    if cpu.control is not None and cpu.others:
        steps.append((f"cpus {cpu_list(cpu.others)}", pin_to(cpu.others)))
    return _report(role, steps)


def apply_io_priority(rt_priority: int) -> RtReport:
    """The io process's SCHED_FIFO (``runtime.io_rt_priority``), so that the safe values
    it sends do not wait for the CPU behind ordinary processes on its cores. Applied
    once its parts have started: start-up (imports, first connections) at a real-time
    priority would hold the supervisor and everything else on those cores back."""
    steps: list[tuple[str, str | None]] = []
    if rt_priority != RT_PRIORITY_OFF:
        steps.append((f"SCHED_FIFO {rt_priority}", set_fifo(rt_priority, "io_rt_priority")))
    return _report("started io", steps)


def _report(role: str, steps: list[tuple[str, str | None]]) -> RtReport:
    applied = tuple(label for label, note in steps if note is None)
    degraded = tuple(note for _, note in steps if note is not None)
    for note in degraded:
        log.warning("%s process: %s", role, note)
    log.info("%s process real-time settings: %s", role, ", ".join(applied) or "none")
    return RtReport(applied=applied, degraded=degraded)


def _libc() -> ctypes.CDLL | None:
    # dlopen(NULL): the interpreter is linked against libc already, so its symbols are
    # there without ctypes.util.find_library (which runs ldconfig in a subprocess).
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, arg: ctypes.c_ulong | ctypes.c_char_p) -> int:
    """prctl(option, arg); -1 when it failed or libc has no prctl (errno via ctypes)."""
    libc = _libc()
    prctl = getattr(libc, "prctl", None)
    if prctl is None:
        return -1
    result: int = prctl(ctypes.c_int(option), arg)
    return result


def _has_capability(bit: int) -> bool:
    """Whether this process holds capability ``bit`` (False when it cannot tell)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _errno_name(code: int | None) -> str:
    return errno.errorcode.get(code or 0, str(code))


def _limit(value: int, unit: str = "") -> str:
    if value == resource.RLIM_INFINITY:
        return "unlimited"
    return f"{value} {unit}".rstrip()
