"""The ``edgeloop`` command: check a config, run the runtime, run the demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.resources import as_file, files
from pathlib import Path
from types import FrameType

from edgeloop import __version__
from edgeloop.app import App, SystemFailure
from edgeloop.config import ConfigError, load_config
from edgeloop.logs import setup_logging
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.schedule import DataLogging, Update
from edgeloop.sim.plant import status_line
from edgeloop.world import World

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2

log = logging.getLogger("edgeloop")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: int = args.command(args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeloop {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    check.add_argument("path", type=Path)
    check.set_defaults(command=_check_config)

    run = commands.add_parser("run", help="run the runtime from a config file")
    run.add_argument("-c", "--config", type=Path, default=Path("/etc/edgeloop/config.yaml"))
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.set_defaults(command=_run)

    demo = commands.add_parser("demo", help="run the demo plant (no hardware needed)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.set_defaults(command=_demo)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    print(f"{args.path}: ok ({', '.join(['runtime', *config.sections])})")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    return _run_config(args.config, args.duration)


def _demo(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    with as_file(files("edgeloop.examples") / "demo.yaml") as path:
        return _run_config(path, args.duration, demo=True)


def _run_config(path: Path, duration: float | None, demo: bool = False) -> int:
    try:
        config = load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            log.error("%s", problem)
        return EXIT_BAD_CONFIG
    for warning in config.warnings:
        log.warning("%s", warning)
    app = App.from_config(config)
    if demo:
        app.add_systems(Update, _log_plant_status, in_set=DataLogging)
    loop = ControlLoop(app)
    max_ticks = None if duration is None else round(duration * app.time.rate_hz)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        loop.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "%s: running %s at %g Hz (%s)",
        app.name,
        path,
        app.time.rate_hz,
        ", ".join(config.sections) or "no plugins",
    )
    try:
        loop.run(max_ticks)
    except SystemFailure as failure:
        log.critical("stopped: %s", failure)
        return EXIT_FAILED
    finally:
        loop.close()
    log.info("%s: stopped after %d ticks, %d overruns", app.name, app.time.tick, loop.overruns)
    return EXIT_OK


def _log_plant_status(world: World) -> None:
    log.info("%s", status_line(world))


if __name__ == "__main__":
    sys.exit(main())
