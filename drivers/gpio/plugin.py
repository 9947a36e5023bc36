"""The ``gpio`` section: lines of GPIO chips as ``bool`` World fields, through the field
bridge like every driver's points, with their I/O in the control process.

Where the line I/O runs, and why here and not in the io process with the other drivers:

- A line read or write is one non-blocking call: an ioctl on the line request's file
  descriptor (``GPIO_V2_LINE_GET_VALUES`` / ``SET_VALUES``) on a kernel chip, an
  attribute on the simulated one; a few microseconds, with no bus to wait on and no
  reply to parse. The io process keeps slow, bursty I/O (sockets, serial ports, a bus
  with timeouts) off the control core; a line has none of that. Opening the lines (at
  Startup, and after a failure once the backoff is over) is an open and an ioctl, no
  waiting either.
- The simulated chip (``chip: sim``) is one per process and state directory, and the
  e-stop's lines are in the control process (an edge must latch the safe state between
  ticks). Lines of this driver in the io process would open a second chip on the same
  socket, which is refused; here they share the e-stop's chip, as lines of one kernel
  chip are shared. A line named by both is refused when the plugins build
  (``claims``).
- An output goes to its safe value in the pass that decides it: on an e-stop edge,
  ``apply_safe_state_now`` runs the field bridge's output side, which drives the line
  at once; no record to an io process that may be busy or down.

It is still the field bridge's one path: each device is a ``DeviceSpec`` whose
``local_writer`` takes its writes, and its values and health come in through
``FieldModel.local`` in FieldInput, so quality, ``DeviceHealth``, one writer per field,
safe values, ``HeldOutputs`` and refusals are those of every driver. The cost: every
device is read every tick (GpioInput, just before FieldInput), a level per line (about
0.5 us a line on the simulated chip, measured with 16; an ioctl a line on a kernel
chip), and only a changed level makes a record. Inputs are sampled at the tick rate, so
a pulse shorter than a tick may pass unseen: a stop belongs in the ``estop`` section,
whose edges wake the loop.
"""

from __future__ import annotations

from collections.abc import Iterator

from edgeloop.app import App
from edgeloop.clock import Time
from edgeloop.config import ConfigSection, RuntimeConfig
from edgeloop.data.tape import InputTape
from edgeloop.drivers.field_bridge import DeviceSpec, add_field_devices, field_model
from edgeloop.drivers.gpio.claims import claim_lines
from edgeloop.drivers.gpio.config import DRIVER, GpioConfig
from edgeloop.drivers.gpio.device import GpioDeviceLines
from edgeloop.drivers.points import point_claims
from edgeloop.schedule import FieldInput, FixedUpdate, GpioInput, IoReceive, Shutdown, Startup
from edgeloop.wiring import Claim
from edgeloop.world import World


class GpioDevices:
    """Resource: the lines of every ``gpio`` device."""

    def __init__(self, devices: list[GpioDeviceLines]) -> None:
        self.devices = devices


class GpioPlugin:
    def __init__(self, config: GpioConfig) -> None:
        self.config = config

    def build(self, app: App) -> None:
        claim_lines(
            app,
            (
                (f"{DRIVER}.devices[{d}].points[{p}]", line)
                for d, device in enumerate(self.config.devices)
                for p, line in enumerate(device.lines())
            ),
        )
        sink = field_model(app).local
        devices = [GpioDeviceLines(device, sink) for device in self.config.devices]
        specs = [
            DeviceSpec(
                lines.config.name,
                DRIVER,
                lines.channel.points,
                local_writer=lines.write,
            )
            for lines in devices
        ]
        add_field_devices(app, DRIVER, specs)
        app.insert_resource(GpioDevices(devices))
        app.configure_sets(FixedUpdate, IoReceive, GpioInput, FieldInput)
        app.add_systems(Startup, open_gpio)
        app.add_systems(FixedUpdate, poll_gpio, in_set=GpioInput)
        # after the bridge's own Shutdown system, which drives the safe values
        app.add_systems(Shutdown, close_gpio)


def open_gpio(world: World) -> None:
    runtime = world.get_resource(RuntimeConfig) or RuntimeConfig()
    now = world.resource(Time).elapsed
    tape = world.get_resource(InputTape)  # recording or replaying: inputs go through it
    for lines in world.resource(GpioDevices).devices:
        lines.open(runtime.state_dir, now, tape)


def poll_gpio(world: World) -> None:
    """GpioInput: every device's inputs read (and a failed device opened when due)."""
    now = world.resource(Time).elapsed
    for lines in world.resource(GpioDevices).devices:
        lines.poll(now)


def close_gpio(world: World) -> None:
    for lines in world.resource(GpioDevices).devices:
        lines.close()


def wiring(config: GpioConfig) -> Iterator[Claim]:
    for index, device in enumerate(config.devices):
        points = [point.point_map() for point in device.points]
        yield from point_claims(DRIVER, device.name, points, ("devices", index))


SECTION = ConfigSection(DRIVER, GpioConfig, GpioPlugin, wiring=wiring)
