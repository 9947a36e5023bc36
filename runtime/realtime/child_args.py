"""The command line the supervisor gives its children, written and read in one place."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from edgeloop.realtime.rt_setup import CpuPlan


def common_args(
    config: Path, heartbeat_fd: int, io_fds: Sequence[int], plan: CpuPlan, log_level: str
) -> list[str]:
    """``io_fds``: the control process's end of each io worker's channel, or an io
    worker's own end."""
    control = "none" if plan.control is None else str(plan.control)
    return [
        "--config",
        str(config),
        "--heartbeat-fd",
        str(heartbeat_fd),
        "--io-fd",
        ",".join(map(str, io_fds)),
        "--control-cpu",
        control,
        "--other-cpus",
        ",".join(map(str, sorted(plan.others))),
        "--log-level",
        log_level,
        "--supervisor-pid",
        str(os.getpid()),
    ]


def parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--heartbeat-fd", type=int, required=True)
    parser.add_argument("--io-fd", type=_int_list, required=True)
    parser.add_argument("--control-cpu", type=_optional_int, default=None)
    parser.add_argument("--other-cpus", type=_int_list, default=[])
    parser.add_argument("--log-level", default="INFO")
    # To notice a supervisor that died before we could ask to die with it.
    parser.add_argument("--supervisor-pid", type=int, default=None)
    return parser


def cpu_plan(args: argparse.Namespace) -> CpuPlan:
    return CpuPlan(args.control_cpu, frozenset(args.other_cpus))


def _optional_int(text: str) -> int | None:
    return None if text == "none" else int(text)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]
