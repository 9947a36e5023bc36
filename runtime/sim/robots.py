"""Robot arms on the network: their messages, their entities, and a simulated fleet.

- ``robot.Telemetry`` (device -> appliance, NORMAL): position, velocity, temperature,
  status. Each robot becomes an entity named by its robot id, with a ``Robot``
  component the dashboard and control logic read.
- ``robot.Command`` (operator -> appliance -> robot, HIGH): routed to the connection of
  the robot it names. The operator is answered at once (``robot.CommandResult`` from the
  appliance: ``sent``, or refused when that robot is not connected), and again with the
  robot's own ``CommandResult`` when the robot answers. Both carry the operator's
  ``command_id``.
- The safe state (e-stop, interlock, Shutdown, ...; ``edgeloop.safety``) stops every
  connected robot: a ``stop`` Command at CRITICAL priority when it starts to hold, and
  to a robot that connects while it holds. Operators' ``move`` commands are refused
  while it holds (``stop`` is always let through).
- ``edgeloop sim robots`` runs a fleet of simulated arms that stream telemetry, obey
  commands and answer them (``SimRobot``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import model_validator

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.component import Component
from edgeloop.config import ConfigSection
from edgeloop.names import Name
from edgeloop.net.client import Client
from edgeloop.net.network import ConnectionEvent, Network, read_network
from edgeloop.net.registry import message
from edgeloop.priority import Priority
from edgeloop.safety.audit_events import audit
from edgeloop.safety.safe_state import SafeState
from edgeloop.safety.systems import add_safe_state, safe_output
from edgeloop.safety.watchdogs import Recovery, Watchdogs, WatchdogSettings
from edgeloop.schedule import ActuatorOutput, ControlLogic, FixedUpdate, SensorInput
from edgeloop.wiring import ANY_ENTITY, Claim, write
from edgeloop.world import World

Status = Literal["idle", "moving", "fault"]


# slots: the io process decodes every frame of the fleet into one of these, and a slotted
# instance is quicker to build and to free.
@message(name="robot.Telemetry", priority=Priority.NORMAL, senders=("device",), key="robot_id")
@dataclass(slots=True)
class Telemetry:
    robot_id: str
    position: float
    velocity: float
    temperature: float
    status: Status


@message(name="robot.Command", priority=Priority.HIGH, senders=("operator", "admin"))
@dataclass
class Command:
    robot_id: str
    action: Literal["move", "stop"]
    target: float = 0.0
    # The sender's, echoed in the CommandResults it gets back. The robot gets the
    # command with an id the appliance chose, and answers with that one.
    command_id: int = 0


Origin = Literal["appliance", "robot"]


@message(name="robot.CommandResult", priority=Priority.HIGH, senders=("device",))
@dataclass
class CommandResult:
    robot_id: str
    accepted: bool
    reason: str
    command_id: int = 0
    # Who decided: the appliance (``sent``, or why not) or the robot (its own outcome).
    # Set by the appliance when it passes a robot's answer on.
    origin: Origin = "appliance"


class Robot(Component):
    """The last telemetry of a connected robot, and the connection it came on."""

    connection: int = 0
    position: float = 0.0
    velocity: float = 0.0
    temperature: float = 0.0
    status: str = "idle"
    last_tick: int = 0


ROBOT_WATCHDOG_S = 5.0


class RobotsConfig(WatchdogSettings):
    """The section turns the robot fleet on; ``watchdog_s`` (default 5 s): a robot with
    no telemetry for that long, connected or not, is Disconnected and stopped.
    ``target_min``/``target_max``: the bounds of a ``move`` target (the robots' own
    units); a move outside them is refused, never clamped."""

    target_min: float | None = None
    target_max: float | None = None

    @model_validator(mode="after")
    def _bounds_ordered(self) -> RobotsConfig:
        low, high = self.target_min, self.target_max
        if low is not None and high is not None and low >= high:
            raise ValueError(f"target_min {low:g} must be below target_max {high:g}")
        return self

    @property
    def watchdog_deadline_s(self) -> float:
        return ROBOT_WATCHDOG_S if self.watchdog_s is None else self.watchdog_s

    def target_refusal(self, target: float) -> str | None:
        """Why a move to ``target`` is refused, or None."""
        if not math.isfinite(target):
            return f"target {target!r} is not a finite number"
        if self.target_min is not None and target < self.target_min:
            return f"target {target:g} is below target_min {self.target_min:g}"
        if self.target_max is not None and target > self.target_max:
            return f"target {target:g} is above target_max {self.target_max:g}"
        return None


class RobotsPlugin:
    def __init__(self, config: RobotsConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        add_safe_state(app)
        app.insert_resource(
            RobotIndex(self.config.watchdog_deadline_s, self.config.watchdog_recovery)
        )
        app.insert_resource(self.config)
        app.insert_resource(CommandsInFlight())
        app.add_systems(FixedUpdate, robots_from_telemetry, in_set=SensorInput)
        app.add_systems(FixedUpdate, route_robot_commands, in_set=ControlLogic)
        app.add_systems(FixedUpdate, route_command_results, in_set=ControlLogic)
        app.add_systems(FixedUpdate, stop_robots_when_safe, in_set=ActuatorOutput)
        safe_output(app, stop_robots_when_safe)


class RobotIndex:
    """Resource: each robot's component by id, so a tick costs O(messages), not
    O(robots) (a name scan over 1 000 robots every tick was measurable)."""

    def __init__(
        self, watchdog_s: float = ROBOT_WATCHDOG_S, watchdog_recovery: Recovery = "auto"
    ) -> None:
        self.by_id: dict[str, Robot] = {}
        self.watchdog_s = watchdog_s
        self.watchdog_recovery: Recovery = watchdog_recovery
        # robot id -> connection last sent a safety stop (0: none since the state began)
        self.stopped: dict[str, int] = {}
        self.stopped_generation = -1  # the SafeState generation the stops were sent for


def robots_from_telemetry(world: World) -> None:
    """SensorInput: one entity per robot, updated from its latest telemetry.

    A robot belongs to the connection that first sent its telemetry, until that one
    disconnects: telemetry for it from any other connection is refused (``not_owner``)."""
    index = world.resource(RobotIndex)
    by_id = index.by_id
    for data in read_network(world, Telemetry):
        msg = data.message
        found = by_id.get(msg.robot_id)
        if found is None:
            robot = by_id[msg.robot_id] = Robot()
            world.commands.spawn(Name(msg.robot_id), robot)
            _watch(world, index, msg.robot_id, robot)
        elif found.connection not in (0, data.connection):
            detail = f"robot {msg.robot_id!r} is another connection's until it disconnects"
            world.resource(Network).refuse(world, data.connection, "not_owner", detail)
            continue
        else:
            robot = found
        robot.connection = data.connection
        robot.position = msg.position
        robot.velocity = msg.velocity
        robot.temperature = msg.temperature
        robot.status = msg.status
        robot.last_tick = data.tick
    # After the telemetry: a connection's last messages come before its end, so one
    # that sent and went in the same tick ends up disconnected, not connected.
    for event in world.read(ConnectionEvent):
        if not event.connected:
            for robot in by_id.values():
                if robot.connection == event.connection:
                    robot.connection = 0
                    robot.status = "fault"


def _watch(world: World, index: RobotIndex, robot_id: str, robot: Robot) -> None:
    def silent(world: World) -> None:
        robot.status = "disconnected"

    world.resource(Watchdogs).watch(
        robot_id,
        index.watchdog_s,
        index.watchdog_recovery,
        world.resource(Time).delta,
        on_expired=silent,
        heard_at=lambda: robot.last_tick,
    )


# How long a robot has to answer a command before the appliance forgets it.
COMMAND_ANSWER_S = 10.0
FORGET_EVERY_TICKS = 100  # a scan of the commands in flight, not one every tick


@dataclass(slots=True)
class _InFlight:
    robot_id: str
    robot_connection: int
    operator_connection: int
    operator_command_id: int
    deadline_tick: int


class CommandsInFlight:
    """Resource: commands sent to robots and not answered yet, by the id the appliance
    gave them (operators choose their own ids, which may clash between operators)."""

    def __init__(self) -> None:
        self.by_id: dict[int, _InFlight] = {}
        self.next_id = 1


def route_robot_commands(world: World) -> None:
    """ControlLogic: an operator's command goes to the robot it names, if connected; the
    operator is told at once (``sent``), and later what the robot made of it."""
    network = world.resource(Network)
    by_id = world.resource(RobotIndex).by_id
    in_flight = world.resource(CommandsInFlight)
    safe = world.resource(SafeState)
    config = world.get_resource(RobotsConfig) or RobotsConfig()
    for data in read_network(world, Command):
        command = data.message
        robot = by_id.get(command.robot_id)
        target = 0 if robot is None else robot.connection
        refusal = config.target_refusal(command.target) if command.action == "move" else None
        held = command.action != "stop" and safe.causes and safe.safe_for(command.robot_id)
        if refusal is None and held:
            refusal = f"the safe state holds: {safe.describe()}"
        if refusal is not None:
            reason = f"refused: {refusal}"
            _audit_command(world, network, data.connection, command, accepted=False, why=reason)
            network.send(
                world,
                data.connection,
                CommandResult(command.robot_id, False, reason, command.command_id),
            )
            continue
        if target:
            ours = in_flight.next_id
            in_flight.next_id += 1
            time = world.resource(Time)
            deadline = time.tick + math.ceil(COMMAND_ANSWER_S / time.delta)
            in_flight.by_id[ours] = _InFlight(
                command.robot_id, target, data.connection, command.command_id, deadline
            )
            network.send(world, target, replace(command, command_id=ours))
            result = CommandResult(command.robot_id, True, "sent", command.command_id)
        else:
            result = CommandResult(
                command.robot_id, False, "robot not connected", command.command_id
            )
        _audit_command(
            world, network, data.connection, command, accepted=result.accepted, why=result.reason
        )
        network.send(world, data.connection, result)


def _audit_command(
    world: World, network: Network, connection: int, command: Command, *, accepted: bool, why: str
) -> None:
    what = f"robot.Command {command.action} {command.robot_id}"
    if command.action == "move":
        what += f" to {command.target:g}"
    audit(world, "command", by=network.describe(connection), what=what, accepted=accepted,
          reason=why, command_id=command.command_id)  # fmt: skip


def route_command_results(world: World) -> None:
    """ControlLogic: a robot's answer to a command goes to the operator who sent it, with
    the operator's id; an answer to no command in flight is refused."""
    network = world.resource(Network)
    in_flight = world.resource(CommandsInFlight).by_id
    for data in read_network(world, CommandResult):
        answer = data.message
        sent = in_flight.get(answer.command_id)
        if (
            sent is None
            or sent.robot_connection != data.connection
            or sent.robot_id != answer.robot_id
        ):
            detail = f"no command {answer.command_id} for {answer.robot_id!r} awaits an answer here"
            network.refuse(world, data.connection, "unknown_command", detail)
            continue
        del in_flight[answer.command_id]
        if sent.operator_connection == 0:
            continue  # the appliance's own (a safety stop): nobody to pass it on to
        passed_on = replace(answer, command_id=sent.operator_command_id, origin="robot")
        network.send(world, sent.operator_connection, passed_on)
    # Forgotten when they can no longer be answered: the robot went, or took too long
    # (its answer is then refused, as one to a command never sent).
    gone = {e.connection for e in world.read(ConnectionEvent) if not e.connected}
    if in_flight and (gone or world.resource(Time).tick % FORGET_EVERY_TICKS == 0):
        tick = world.resource(Time).tick
        for ours in [
            ours
            for ours, sent in in_flight.items()
            if sent.robot_connection in gone or sent.deadline_tick <= tick
        ]:
            del in_flight[ours]


def stop_robots_when_safe(world: World) -> None:
    """ActuatorOutput (and Shutdown): each connected robot the safe state holds (every
    robot, or its own watchdog) gets one ``stop`` at CRITICAL priority, sent again when
    the state changes or the robot comes back on another connection."""
    safe = world.resource(SafeState)
    index = world.resource(RobotIndex)
    if not safe.causes:
        if index.stopped:
            index.stopped.clear()
        return
    if index.stopped_generation != safe.generation:
        index.stopped_generation = safe.generation
        index.stopped.clear()
    network = world.get_resource(Network)
    if network is None:
        return
    in_flight = world.resource(CommandsInFlight)
    time = world.resource(Time)
    if safe.everything:
        held: Iterable[str] = index.by_id
    else:
        held = [c.scope for c in safe.causes.values() if c.scope in index.by_id]
    for robot_id in held:
        robot = index.by_id[robot_id]
        if robot.connection == 0 or index.stopped.get(robot_id) == robot.connection:
            continue
        index.stopped[robot_id] = robot.connection
        ours = in_flight.next_id
        in_flight.next_id += 1
        deadline = time.tick + math.ceil(COMMAND_ANSWER_S / time.delta)
        in_flight.by_id[ours] = _InFlight(robot_id, robot.connection, 0, 0, deadline)
        stop = Command(robot_id, "stop", command_id=ours)
        network.send(world, robot.connection, stop, Priority.CRITICAL)


def wiring(_config: RobotsConfig) -> Iterator[Claim]:
    """Each robot's entity (named by its id, so any entity) is written from its telemetry."""
    for name in ("connection", "position", "velocity", "temperature", "status", "last_tick"):
        target = f"{ANY_ENTITY}.Robot.{name}"
        yield write(target, "robots_from_telemetry", "network input robot.Telemetry", ())


SECTION = ConfigSection(
    "robots",
    RobotsConfig,
    RobotsPlugin,
    message_types=(Telemetry, Command, CommandResult),
    wiring=wiring,
)


class SimRobot:
    """A simulated arm: moves toward its target at ``speed`` units/s within ``reach`` of
    0, streams telemetry, and answers every command it gets for itself."""

    def __init__(
        self, robot_id: str, rate_hz: float, speed: float = 1.0, reach: float = 10.0
    ) -> None:
        self.robot_id = robot_id
        self.period_s = 1.0 / rate_hz
        self.speed = speed
        self.reach = reach
        self.position = 0.0
        self.target = 0.0
        self.commands_obeyed = 0

    def step(self, dt: float) -> Telemetry:
        error = self.target - self.position
        move = math.copysign(min(abs(error), self.speed * dt), error)
        self.position += move
        status: Status = "moving" if abs(error) > 1e-9 else "idle"
        return Telemetry(self.robot_id, self.position, move / dt, 35.0 + abs(move), status)

    def obey(self, command: Command) -> CommandResult:
        """Carry out ``command`` if it can be; the answer to send back either way."""
        if command.action == "move" and abs(command.target) > self.reach:
            reason = f"target {command.target:g} is out of reach (±{self.reach:g})"
            return CommandResult(self.robot_id, False, reason, command.command_id)
        self.target = command.target if command.action == "move" else self.position
        self.commands_obeyed += 1
        return CommandResult(self.robot_id, True, "obeyed", command.command_id)

    async def session(self, client: Client) -> None:
        """Stream telemetry at the robot's rate and obey commands, until disconnected."""

        async def listen() -> None:
            while True:
                msg = await client.receive()
                if isinstance(msg, Command) and msg.robot_id == self.robot_id:
                    await client.send(self.obey(msg))

        listener = asyncio.create_task(listen())
        try:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while not listener.done():
                await client.send(self.step(self.period_s))
                next_at += self.period_s
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            listener.result()
        finally:
            listener.cancel()


def fleet_clients(
    host: str, port: int, token: str, count: int, rate_hz: float
) -> list[tuple[SimRobot, Client]]:
    message_types = (Telemetry, Command, CommandResult)
    pairs = []
    for index in range(count):
        robot = SimRobot(f"robot-{index + 1}", rate_hz)
        client = Client(
            host,
            port,
            client_id=robot.robot_id,
            token=token,
            role="device",
            message_types=message_types,
        )
        pairs.append((robot, client))
    return pairs
