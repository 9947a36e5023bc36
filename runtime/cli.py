"""The ``edgeloop`` command: check a config, run the runtime, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.resources import as_file, files
from pathlib import Path
from types import FrameType

from edgeloop import __version__, wiring, wiring_requests
from edgeloop.alarm_commands import Acknowledge, AckResult
from edgeloop.app import App, SystemFailure
from edgeloop.config import Config, ConfigError, load_config, load_config_or_report
from edgeloop.data.query_cli import add_query_command
from edgeloop.data.recorder import add_recorder
from edgeloop.data.recording import RecordingWriter
from edgeloop.data.replay_cli import add_replay_command
from edgeloop.demo_config import (
    DEFAULT_RUN_DIR,
    HIGHEST_PORT_BASE,
    LOWEST_PORT_BASE,
    demo_ports,
    place_demo_config,
)
from edgeloop.demo_devices import start_simulators, stop_simulators
from edgeloop.drivers.gpio import estop_switch, sim_client
from edgeloop.logs import setup_logging
from edgeloop.net import operator_request, type_table
from edgeloop.net.registry import ProtocolError
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.realtime.supervisor import Supervisor
from edgeloop.safety import estop_client
from edgeloop.safety.audit_cli import add_audit_commands
from edgeloop.sim.robots import fleet_clients
from edgeloop.web.address import dashboard_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
DEFAULT_CONFIG = Path("/etc/edgeloop/config.yaml")

log = logging.getLogger("edgeloop")

# `edgeloop sim <bus> ...`: each simulator parses its own arguments (`--help` lists them).
FIELD_SIMULATORS = (
    ("modbus", "edgeloop.drivers.modbus.sim", "a Modbus PLC (TCP, or RTU on a pty)"),
    ("can", "edgeloop.drivers.can.sim", "a CAN motor drive"),
    ("serial", "edgeloop.drivers.serial.sim", "a serial sensor on a pty"),
)
SIMULATOR_MODULES = {bus: module for bus, module, _ in FIELD_SIMULATORS}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # A field simulator parses its own options: everything after `sim <bus>` is its.
    own: list[str] = []
    for at, word in enumerate(words[:-1]):
        if word == "sim" and words[at + 1] in SIMULATOR_MODULES:
            words, own = words[: at + 2], words[at + 2 :]
            break
    args = _parser().parse_args(words)
    if own:
        args.args = own
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
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    _add_run_options(run)
    run.set_defaults(command=_run)

    demo = commands.add_parser(
        "demo",
        help="run the demo plant (no hardware needed)",
        description="Run config/demo.yaml with its simulated robots and field devices. "
        "--port-base and --run-dir let several demos (or test runs) share a machine.",
    )
    _add_run_options(demo)
    demo.add_argument(
        "--port-base",
        type=_port_base,
        metavar="N",
        help="listen and simulate on ports N (robots, TCP), N+1 (dashboard, HTTP and "
        "WebSocket), N+2 (the simulated Modbus PLC), N+3 (the Modbus server), N+4 (CAN "
        "over UDP multicast, on a group made from N) instead of "
        f"{', '.join(str(port) for port in _demo_ports())}",
    )
    demo.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        metavar="DIR",
        help="where the demo writes the config it runs (DIR/config.yaml) and its "
        "simulated serial devices appear (default: %(default)s)",
    )
    demo.add_argument(
        "--sparkplug",
        type=_broker,
        metavar="HOST:PORT",
        help="publish the plant as a Sparkplug B edge node to the MQTT broker there "
        "(config/demo-sparkplug.yaml; docs/uplinks.md)",
    )
    demo.set_defaults(command=_demo)

    add_audit_commands(commands, DEFAULT_CONFIG)
    add_query_command(commands, DEFAULT_CONFIG)
    add_replay_command(commands)

    wired = commands.add_parser(
        "wiring",
        help="print every World field with its writer, readers, bounds and safe value",
        description="The wiring a config declares (or, with --running, the one a running "
        "appliance was started with): one writer per field, each with its config line.",
    )
    wired.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG)
    wired.add_argument(
        "--running", action="store_true", help="ask the running appliance (network.tcp)"
    )
    wired.add_argument("--token", help="with --running: a viewer's (or operator's) token")
    wired.add_argument("--role", default="viewer", choices=["viewer", "operator", "admin"])
    wired.add_argument("--port", type=int, help="the TCP port (default: the config's)")
    wired.set_defaults(command=_wiring)

    types = commands.add_parser(
        "protocol-types", help="print the table of wire message types (docs/protocol.md)"
    )
    types.add_argument("--update", type=Path, metavar="DOC", help="rewrite it in DOC instead")
    types.set_defaults(command=_protocol_types)

    _add_gpio_commands(commands)

    sim = commands.add_parser("sim", help="simulated devices for demos and tests")
    simulators = sim.add_subparsers(required=True, metavar="DEVICE")
    robots = simulators.add_parser("robots", help="a fleet of robot arms over TCP")
    robots.add_argument("--count", type=int, default=3)
    robots.add_argument("--rate", type=float, default=10.0, help="telemetry per robot, Hz")
    robots.add_argument("--host", default="127.0.0.1")
    robots.add_argument("--port", type=int, default=7700)
    robots.add_argument("--token", default="demo-robot")
    robots.add_argument("--duration", type=float, help="stop after this many seconds")
    robots.set_defaults(command=_sim_robots)
    for bus, module, text in FIELD_SIMULATORS:
        device = simulators.add_parser(bus, help=text, add_help=False)
        device.set_defaults(command=_sim_field_device, module=module, args=[])
    return parser


def _add_gpio_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    estop = commands.add_parser(
        "estop",
        help="press or release the e-stop of a running `edgeloop run` (inputs on chip: sim)",
    )
    actions = estop.add_subparsers(required=True, metavar="ACTION")
    for action, pressed in (("press", True), ("release", False)):
        button = actions.add_parser(action, help=f"{action} the e-stop on the simulated chip")
        button.add_argument("-c", "--config", type=Path, default=Path("/etc/edgeloop/config.yaml"))
        button.add_argument(
            "--line", type=int, metavar="N", help="only estop.inputs[N] (default: every one)"
        )
        button.set_defaults(command=_estop, pressed=pressed)
    for action, text in (
        ("reset", "reset the latched safe state (refused while an e-stop input is active)"),
        ("stop", "a software e-stop: latches as the button does"),
    ):
        asking = actions.add_parser(action, help=text)
        asking.add_argument("-c", "--config", type=Path, default=Path("/etc/edgeloop/config.yaml"))
        asking.add_argument("--token", required=True, help="an operator's token")
        asking.add_argument("--port", type=int, help="the TCP port (default: the config's)")
        asking.add_argument("--reason", default="", help="why (stop; for the audit log)")
        asking.set_defaults(command=_estop_ask, action=action)

    alarm = commands.add_parser("alarm", help="acknowledge an alarm of a running appliance")
    alarm_actions = alarm.add_subparsers(required=True, metavar="ACTION")
    ack = alarm_actions.add_parser("ack", help="acknowledge the alarm of SOURCE as an operator")
    ack.add_argument("source", help="the alarm's source, e.g. watchdog:plc1 or alarm:tank_high")
    ack.add_argument("-c", "--config", type=Path, default=Path("/etc/edgeloop/config.yaml"))
    ack.add_argument("--token", required=True, help="an operator's token")
    ack.add_argument("--port", type=int, help="the TCP port (default: the config's)")
    ack.set_defaults(command=_alarm_ack)

    gpio = commands.add_parser("gpio", help="read or drive a line of the simulated GPIO chip")
    gpio_commands = gpio.add_subparsers(required=True, metavar="ACTION")
    get = gpio_commands.add_parser("get", help="print a line's physical level (0 or 1)")
    drive = gpio_commands.add_parser("set", help="drive a line's physical level from outside")
    for parser in (get, drive):
        parser.add_argument(
            "--state-dir", type=Path, required=True, metavar="DIR", help="runtime.state_dir"
        )
        parser.add_argument("offset", type=int)
    drive.add_argument("level", type=int, choices=[0, 1])
    get.set_defaults(command=_gpio_get)
    drive.set_defaults(command=_gpio_set)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--single-process",
        action="store_true",
        help="run the control loop in this process, without supervisor or io process "
        "(development and debugging)",
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--record", type=Path, metavar="PATH", help="record every input for `edgeloop replay`"
    )
    # Load for benchmarks: synthetic records per second from each io process.
    parser.add_argument("--synthetic-io", type=float, default=0.0, help=argparse.SUPPRESS)


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


def _protocol_types(args: argparse.Namespace) -> int:
    table = type_table.markdown(type_table.shipped_registry())
    if args.update is None:
        print(table)
    else:
        args.update.write_text(type_table.updated(args.update.read_text(), table))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    return _run_config(args.config, args)


def _demo(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    with as_file(files("edgeloop.examples") / "demo.yaml") as source:
        path = place_demo_config(source, args.run_dir, args.port_base, sparkplug=args.sparkplug)
    config = load_config(path)
    url = dashboard_url(config)
    if url is not None:
        # config/demo.yaml's published tokens: viewer reads, operator also stops and resets
        log.info("dashboard: %s?token=demo-viewer (operator: %s?token=demo-operator)", url, url)
    simulators = [] if args.single_process else start_simulators(config)
    try:
        return _run_config(path, args)
    finally:
        stop_simulators(simulators)


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: write HOST:PORT, e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


def _port_base(text: str) -> int:
    port = int(text)
    if not LOWEST_PORT_BASE <= port <= HIGHEST_PORT_BASE:
        raise argparse.ArgumentTypeError(
            f"{port}: must be from {LOWEST_PORT_BASE} to {HIGHEST_PORT_BASE}"
        )
    return port


def _demo_ports() -> list[int]:
    with as_file(files("edgeloop.examples") / "demo.yaml") as source:
        return demo_ports(source)


def _run_config(path: Path, args: argparse.Namespace) -> int:
    try:
        config = load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            log.error("%s", problem)
        return EXIT_BAD_CONFIG
    for warning in config.warnings:
        log.warning("%s", warning)
    if not args.single_process:
        log.info("%s: starting %s (%s)", config.runtime.name, path, _plugins(config))
        io_args = ("--synthetic-records-per-s", str(args.synthetic_io)) if args.synthetic_io else ()
        control_args = ("--record", str(args.record)) if args.record else ()
        supervisor = Supervisor(
            path, config, log_level=args.log_level, io_args=io_args, control_args=control_args
        )
        return supervisor.run(args.duration)
    return _run_single_process(config, path, args.duration, args.record)


def _sim_robots(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    fleet = fleet_clients(args.host, args.port, args.token, args.count, args.rate)
    log.info("%d simulated robots -> %s:%d at %g Hz", args.count, args.host, args.port, args.rate)

    async def run() -> None:
        tasks = [asyncio.create_task(c.run_forever(r.session)) for r, c in fleet]
        try:
            await asyncio.wait(tasks, timeout=args.duration)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return EXIT_OK


def _sim_field_device(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    # Imported here: a simulator's bus library is not needed by any other command.
    simulator = importlib.import_module(args.module)
    code: int = simulator.main(args.args)
    return code


def _estop(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    try:
        lines = estop_switch.simulated_lines(estop_switch.estop_lines(config), args.line)
        estop_switch.set_pressed(config.runtime.state_dir, lines, args.pressed)
    except (estop_switch.NoSimEstop, sim_client.NoSimChip, sim_client.Refused) as error:
        print(f"edgeloop estop: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _appliance_tcp(args: argparse.Namespace, command: str) -> tuple[str, int] | int:
    """Where the config's appliance takes TCP clients, or the exit code saying why not."""
    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    network = config.sections.get("network")
    tcp = getattr(network, "tcp", None)
    if tcp is None:
        print(f"edgeloop {command}: the config has no network.tcp to send it to", file=sys.stderr)
        return EXIT_FAILED
    port = args.port if args.port is not None else tcp.port
    host = "127.0.0.1" if tcp.host in ("0.0.0.0", "::", "") else tcp.host
    return host, port


def _estop_ask(args: argparse.Namespace) -> int:
    where = _appliance_tcp(args, "estop")
    if isinstance(where, int):
        return where
    host, port = where
    try:
        answer = asyncio.run(estop_client.ask(host, port, args.token, args.action, args.reason))
    except (OSError, TimeoutError, ConnectionError) as error:
        print(f"edgeloop estop: no answer from {host}:{port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.action}: {'accepted' if answer.accepted else 'refused'}: {answer.reason}")
    return EXIT_OK if answer.accepted else EXIT_FAILED


def _alarm_ack(args: argparse.Namespace) -> int:
    where = _appliance_tcp(args, "alarm")
    if isinstance(where, int):
        return where
    host, port = where
    request = Acknowledge(args.source)
    try:
        answer = asyncio.run(
            operator_request.ask(
                host,
                port,
                args.token,
                request,
                answer=AckResult,
                matches=lambda result: result.source == args.source,
                message_types=(Acknowledge, AckResult),
            )
        )
    except (OSError, TimeoutError, ConnectionError) as error:
        print(f"edgeloop alarm: no answer from {host}:{port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"ack {args.source}: {'accepted' if answer.accepted else 'refused'}: {answer.reason}")
    return EXIT_OK if answer.accepted else EXIT_FAILED


def _wiring(args: argparse.Namespace) -> int:
    if not args.running:
        config = load_config_or_report(args.config)
        if config is None:
            return EXIT_BAD_CONFIG
        print(wiring.render(wiring.table(config.wiring, config.where)))
        return EXIT_OK
    if args.token is None:
        print("edgeloop wiring: --running needs --token", file=sys.stderr)
        return EXIT_FAILED
    where = _appliance_tcp(args, "wiring")
    if isinstance(where, int):
        return where
    host, port = where
    try:
        page = asyncio.run(wiring_requests.ask(host, port, args.token, args.role))
    except (OSError, TimeoutError, ConnectionError, ProtocolError) as error:
        print(f"edgeloop wiring: no answer from {host}:{port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"# running {page.config} ({host}:{port})")
    print(wiring.render(page.fields))
    return EXIT_OK


def _gpio_get(args: argparse.Namespace) -> int:
    try:
        print(sim_client.get_level(args.state_dir, args.offset))
    except (sim_client.NoSimChip, sim_client.Refused) as error:
        print(f"edgeloop gpio: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _gpio_set(args: argparse.Namespace) -> int:
    try:
        sim_client.set_level(args.state_dir, args.offset, args.level)
    except (sim_client.NoSimChip, sim_client.Refused) as error:
        print(f"edgeloop gpio: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _plugins(config: Config) -> str:
    return ", ".join(config.sections) or "no plugins"


def _run_single_process(
    config: Config, path: Path, duration: float | None, record: Path | None
) -> int:
    app = App.from_config(config)
    loop = ControlLoop(app)
    record = record or config.runtime.record
    if record is not None:
        add_recorder(app, RecordingWriter(record, config))
    max_ticks = None if duration is None else round(duration * app.time.rate_hz)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        loop.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s: running %s at %g Hz (%s)", app.name, path, app.time.rate_hz, _plugins(config))
    try:
        loop.run(max_ticks)
    except SystemFailure as failure:
        log.critical("stopped: %s", failure)
        return EXIT_FAILED
    finally:
        loop.close()
    log.info(
        "%s: stopped after %d ticks, %d overruns", app.name, app.time.tick, loop.stats.overruns
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
