"""Real-time settings: each applied, or refused with a note saying what to change.

Everything that changes the process (scheduler, affinity, mlock, gc, name, death signal)
runs in a forked child that reports back through a pipe and leaves with ``os._exit``: the
pytest process itself is never pinned, SCHED_FIFO or locked. Privileged paths run where
the capability is held (root in CI); unprivileged paths drop it in the child first.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import select
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeloop.realtime.rt_setup import (
    CAP_IPC_LOCK,
    CAP_SYS_NICE,
    ONE_CPU_NOTE,
    CpuPlan,
    RtReport,
    apply_control_settings,
    apply_io_priority,
    apply_io_settings,
    collect_young,
    cpu_list,
    die_with_parent,
    freeze_gc,
    isolated_cpus,
    lock_memory,
    parse_cpu_list,
    pin_to,
    plan_cpus,
    set_fifo,
    set_process_name,
)

CHILD_TIMEOUT_S = 20.0
NOBODY = 65534
# Above nr_cpu_ids of any machine this runs on: the kernel refuses a mask of only it.
MISSING_CPU = 4095


def has_capability(bit: int) -> bool:
    with open("/proc/self/status") as f:
        caps = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> bit & 1)


needs_sys_nice = pytest.mark.skipif(
    not has_capability(CAP_SYS_NICE), reason="needs CAP_SYS_NICE (CI runs as root)"
)
needs_ipc_lock = pytest.mark.skipif(
    not has_capability(CAP_IPC_LOCK), reason="needs CAP_IPC_LOCK (CI runs as root)"
)


def in_child(body: Callable[[], Any]) -> Any:
    """What ``body`` returns when run in a forked child (JSON through a pipe)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                message = {"result": body()}
            except BaseException:
                message = {"error": traceback.format_exc()}
            os.write(write_fd, json.dumps(message).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        data = read_to_eof(read_fd, time.monotonic() + CHILD_TIMEOUT_S)
    finally:
        os.close(read_fd)
        reap(pid)
    message = json.loads(data)
    if "error" in message:
        pytest.fail(f"child raised:\n{message['error']}")
    return message["result"]


def read_to_eof(fd: int, deadline: float) -> bytes:
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            pytest.fail("child did not report in time")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def reap(pid: int) -> None:
    """Wait for ``pid``, killing it first if it is still running (no-op once reaped)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def drop_privileges() -> None:
    """Become an ordinary user: no RT or mlock rlimit, and (from root) no capabilities."""
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    if os.geteuid() == 0:
        # setuid away from root clears the permitted and effective capability sets.
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if has_capability(CAP_SYS_NICE) or has_capability(CAP_IPC_LOCK):
        raise RuntimeError("capabilities survived the drop (ambient?): cannot test refusal")


def vm_locked_kb() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmLck:"))
    return int(line.split()[1])


class RecordList(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


def report_dict(report: RtReport) -> dict[str, list[str]]:
    return {"applied": list(report.applied), "degraded": list(report.degraded)}


# -- plan_cpus -------------------------------------------------------------------------


def test_auto_takes_the_highest_cpu_for_control_and_leaves_the_rest_to_io() -> None:
    plan, notes = plan_cpus("auto", available=frozenset({0, 1, 2, 3}))
    assert plan == CpuPlan(control=3, others=frozenset({0, 1, 2}))
    assert notes == []


def test_auto_on_two_cpus() -> None:
    assert plan_cpus("auto", available=frozenset({0, 1})) == (
        CpuPlan(control=1, others=frozenset({0})),
        [],
    )


def test_auto_on_one_cpu_pins_nothing_and_says_why() -> None:
    plan, notes = plan_cpus("auto", available=frozenset({0}))
    assert plan == CpuPlan(control=None, others=frozenset())
    assert notes == [ONE_CPU_NOTE]
    assert "use a machine with 2+ cores" in notes[0]


def test_a_chosen_cpu_is_the_control_core() -> None:
    plan, notes = plan_cpus(2, available=frozenset({0, 1, 2, 3}))
    assert plan == CpuPlan(control=2, others=frozenset({0, 1, 3}))
    assert notes == []


def test_a_chosen_cpu_that_is_not_available_pins_nothing_and_names_the_choices() -> None:
    plan, notes = plan_cpus(7, available=frozenset({0, 1, 2, 3}))
    assert plan.control is None
    assert notes == [
        "runtime.cpu: 7 is not an available CPU (available: 0-3); "
        "set runtime.cpu to one of them, 'auto' or null"
    ]


def test_a_chosen_isolated_cpu_is_the_control_core_though_no_mask_has_it() -> None:
    # isolcpus=1 (the image's kernel command line): CPU 1 is in nobody's default mask.
    plan, notes = plan_cpus(1, available=frozenset({0}), isolated=frozenset({1}))
    assert plan == CpuPlan(control=1, others=frozenset({0}))
    assert notes == []


def test_auto_takes_the_highest_isolated_cpu() -> None:
    plan, notes = plan_cpus("auto", available=frozenset({0, 1}), isolated=frozenset({2, 3}))
    assert plan == CpuPlan(control=3, others=frozenset({0, 1}))
    assert notes == []


def test_the_kernel_cpu_list_format_is_read_back() -> None:
    assert parse_cpu_list("0-2,5,7-8") == frozenset({0, 1, 2, 5, 7, 8})
    assert parse_cpu_list("") == frozenset()


def test_isolated_cpus_of_a_missing_file_are_none(tmp_path: Path) -> None:
    assert isolated_cpus(str(tmp_path / "isolated")) == frozenset()
    (tmp_path / "isolated").write_text("1,3\n")
    assert isolated_cpus(str(tmp_path / "isolated")) == frozenset({1, 3})


def test_a_chosen_cpu_on_a_single_cpu_machine_pins_nothing() -> None:
    plan, notes = plan_cpus(0, available=frozenset({0}))
    assert plan.control is None
    assert notes == [ONE_CPU_NOTE]


def test_none_pins_nothing_without_a_note() -> None:
    assert plan_cpus(None, available=frozenset({0, 1})) == (
        CpuPlan(control=None, others=frozenset()),
        [],
    )


def test_available_defaults_to_this_process_affinity() -> None:
    plan, _ = plan_cpus("auto")
    cpus = os.sched_getaffinity(0)
    if len(cpus) >= 2:
        assert plan.control == max(cpus)
        assert plan.others == frozenset(cpus) - {max(cpus)}
    else:
        assert plan.control is None


def test_the_control_core_is_never_an_io_core() -> None:
    with pytest.raises(ValueError, match="cpu 1 is both"):
        CpuPlan(control=1, others=frozenset({0, 1}))


def test_cpu_lists_read_like_the_kernel_prints_them() -> None:
    assert cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert cpu_list([]) == ""


# -- process name, parent death --------------------------------------------------------


def comm_after(name: str) -> str:
    def body() -> str:
        set_process_name(name)
        with open("/proc/self/comm") as f:
            return f.read().rstrip("\n")

    result: str = in_child(body)
    return result


def test_process_name_shows_in_proc_comm() -> None:
    assert comm_after("edgeloop-ctl") == "edgeloop-ctl"


def test_process_name_is_cut_to_15_bytes() -> None:
    assert comm_after("edgeloop-control-process") == "edgeloop-contro"


def test_process_name_is_cut_at_a_character_boundary() -> None:
    # 12 ASCII bytes + "é" (2) + "€" (3): the € would straddle byte 15, so it goes whole.
    assert comm_after("edgeloop-ctlé€") == "edgeloop-ctlé"


def is_gone(pid: int) -> bool:
    """Dead: reaped, or a zombie (a container's pid 1 may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_child_dies_when_its_parent_is_sigkilled() -> None:
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_fd)
            parent = os.getpid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent(signal.SIGTERM, parent=parent)
                os.write(write_fd, f"{os.getpid()}\n".encode())  # armed
                while True:
                    signal.pause()
            while True:
                signal.pause()
        finally:
            os._exit(1)
    os.close(write_fd)
    grandchild = None
    try:
        line = read_to_eof_or_line(read_fd, time.monotonic() + CHILD_TIMEOUT_S)
        grandchild = int(line)
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not is_gone(grandchild) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_gone(grandchild), "the grandchild outlived its SIGKILLed parent"
    finally:
        os.close(read_fd)
        reap(middle)
        if grandchild is not None and not is_gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def read_to_eof_or_line(fd: int, deadline: float) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            pytest.fail("grandchild did not report in time")
        chunk = os.read(fd, 64)
        if not chunk:
            pytest.fail("grandchild exited before arming its death signal")
        data += chunk
    return data


def test_a_child_whose_parent_died_before_arming_signals_itself() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # Our own pid is never our parent's: as if the parent had died before the prctl.
            die_with_parent(signal.SIGTERM, parent=os.getpid())
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGTERM


# -- SCHED_FIFO ------------------------------------------------------------------------


@needs_sys_nice
def test_fifo_is_applied_with_cap_sys_nice() -> None:
    def body() -> dict[str, Any]:
        note = set_fifo(50)
        return {
            "note": note,
            "fifo": os.sched_getscheduler(0) == os.SCHED_FIFO,
            "priority": os.sched_getparam(0).sched_priority,
        }

    assert in_child(body) == {"note": None, "fifo": True, "priority": 50}


def test_fifo_refused_unprivileged_says_what_to_grant() -> None:
    def body() -> dict[str, Any]:
        drop_privileges()
        note = set_fifo(50)
        return {"note": note, "fifo": os.sched_getscheduler(0) == os.SCHED_FIFO}

    result = in_child(body)
    assert result["fifo"] is False
    assert result["note"] == (
        "rt_priority 50: SCHED_FIFO refused (EPERM, RLIMIT_RTPRIO is 0): grant CAP_SYS_NICE "
        "(AmbientCapabilities=CAP_SYS_NICE) or LimitRTPRIO=50 or higher, "
        "or set runtime.rt_priority: 0"
    )


def test_fifo_priority_0_is_a_no_op() -> None:
    def body() -> dict[str, Any]:
        before = os.sched_getscheduler(0)
        return {"note": set_fifo(0), "unchanged": os.sched_getscheduler(0) == before}

    assert in_child(body) == {"note": None, "unchanged": True}


@pytest.mark.parametrize("priority", [-1, 100])
def test_fifo_priority_outside_0_to_99_is_an_error(priority: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.99"):
        set_fifo(priority)


# -- affinity, mlockall, gc ------------------------------------------------------------


def test_pin_to_restricts_the_process_to_that_cpu() -> None:
    cpu = max(os.sched_getaffinity(0))

    def body() -> dict[str, Any]:
        return {"note": pin_to([cpu]), "affinity": sorted(os.sched_getaffinity(0))}

    assert in_child(body) == {"note": None, "affinity": [cpu]}


def test_pin_to_a_missing_cpu_is_refused_with_the_allowed_cpus() -> None:
    allowed = cpu_list(os.sched_getaffinity(0))

    def body() -> dict[str, Any]:
        return {"note": pin_to([MISSING_CPU]), "affinity": cpu_list(os.sched_getaffinity(0))}

    result = in_child(body)
    assert result["affinity"] == allowed
    assert result["note"].startswith(f"cpu {MISSING_CPU}: sched_setaffinity refused (EINVAL)")
    assert f"may run on {allowed} only" in result["note"]


@needs_ipc_lock
def test_lock_memory_locks_the_process_pages() -> None:
    def body() -> dict[str, Any]:
        return {"note": lock_memory(), "locked": vm_locked_kb() > 0}

    assert in_child(body) == {"note": None, "locked": True}


def test_lock_memory_refused_unprivileged_names_cap_ipc_lock() -> None:
    def body() -> dict[str, Any]:
        drop_privileges()
        return {"note": lock_memory(), "locked_kb": vm_locked_kb()}

    result = in_child(body)
    assert result["locked_kb"] == 0
    assert result["note"].startswith("mlockall refused (EPERM, RLIMIT_MEMLOCK is 0 bytes)")
    assert "CAP_IPC_LOCK" in result["note"]
    assert "LimitMEMLOCK=infinity" in result["note"]


def test_freeze_gc_disables_collection_and_freezes_the_startup_heap() -> None:
    def body() -> dict[str, Any]:
        freeze_gc()
        enabled, frozen = gc.isenabled(), gc.get_freeze_count()
        a: list[object] = []
        b: list[object] = [a]
        a.append(b)
        del a, b
        return {"enabled": enabled, "frozen": frozen, "young_cycle": collect_young()}

    result = in_child(body)
    assert result["enabled"] is False
    assert result["frozen"] > 0
    assert result["young_cycle"] >= 2


# -- applying a plan -------------------------------------------------------------------


@needs_sys_nice
@needs_ipc_lock
def test_control_settings_all_applied_with_privileges() -> None:
    plan, _ = plan_cpus("auto")

    def body() -> dict[str, Any]:
        report = apply_control_settings(plan, rt_priority=50, lock=True)
        return {
            **report_dict(report),
            "affinity": sorted(os.sched_getaffinity(0)),
            "fifo": os.sched_getscheduler(0) == os.SCHED_FIFO,
            "locked": vm_locked_kb() > 0,
            "gc_enabled": gc.isenabled(),
        }

    result = in_child(body)
    pinned = [] if plan.control is None else [f"cpu {plan.control}"]
    assert result["applied"] == [*pinned, "mlockall", "SCHED_FIFO 50"]
    assert result["degraded"] == []
    assert result["fifo"] is True
    assert result["locked"] is True
    assert result["gc_enabled"] is True  # freezing is the loop's job, after start-up
    if plan.control is not None:
        assert result["affinity"] == [plan.control]


def test_control_settings_unprivileged_log_each_note_once() -> None:
    plan = CpuPlan(control=MISSING_CPU, others=frozenset())

    def body() -> dict[str, Any]:
        drop_privileges()
        handler = RecordList()
        logger = logging.getLogger("edgeloop.rt")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        report = apply_control_settings(plan, rt_priority=50, lock=True)
        return {**report_dict(report), "records": handler.records}

    result = in_child(body)
    assert result["applied"] == []
    assert len(result["degraded"]) == 3
    assert [note.split(":")[0] for note in result["degraded"]] == [
        f"cpu {MISSING_CPU}",
        "mlockall refused (EPERM, RLIMIT_MEMLOCK is 0 bytes)",
        "rt_priority 50",
    ]
    warnings = [message for level, message in result["records"] if level == "WARNING"]
    infos = [message for level, message in result["records"] if level == "INFO"]
    assert warnings == [f"control process: {note}" for note in result["degraded"]]
    assert infos == ["control process real-time settings: none"]


def test_io_settings_keep_off_the_control_core() -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs 2+ CPUs to keep one for control")
    plan, _ = plan_cpus("auto")

    def body() -> dict[str, Any]:
        report = apply_io_settings(plan)
        return {**report_dict(report), "affinity": sorted(os.sched_getaffinity(0))}

    result = in_child(body)
    assert result["applied"] == [f"cpus {cpu_list(plan.others)}"]
    assert result["affinity"] == sorted(plan.others)
    assert plan.control not in result["affinity"]


def test_io_settings_without_a_control_core_pin_nothing() -> None:
    def body() -> dict[str, Any]:
        before = sorted(os.sched_getaffinity(0))
        report = apply_io_settings(CpuPlan(control=None, others=frozenset()))
        return {**report_dict(report), "unchanged": sorted(os.sched_getaffinity(0)) == before}

    assert in_child(body) == {"applied": [], "degraded": [], "unchanged": True}


@needs_sys_nice
def test_io_settings_run_the_io_process_under_fifo_when_asked() -> None:
    def body() -> dict[str, Any]:
        report = apply_io_priority(10)
        return {
            **report_dict(report),
            "fifo": os.sched_getscheduler(0) == os.SCHED_FIFO,
            "priority": os.sched_getparam(0).sched_priority,
        }

    assert in_child(body) == {
        "applied": ["SCHED_FIFO 10"],
        "degraded": [],
        "fifo": True,
        "priority": 10,
    }


def test_io_fifo_refused_unprivileged_names_its_own_setting() -> None:
    def body() -> dict[str, Any]:
        drop_privileges()
        return report_dict(apply_io_priority(10))

    result = in_child(body)
    assert result["applied"] == []
    (note,) = result["degraded"]
    assert note.startswith("io_rt_priority 10: SCHED_FIFO refused (EPERM")
    assert note.endswith("or set runtime.io_rt_priority: 0")
