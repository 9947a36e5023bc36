from __future__ import annotations

from edgeloop import Alarms, App, ControlLogic, FixedUpdate, Shutdown, World
from edgeloop.priority import Priority
from edgeloop.realtime.io_link import IoInput, IoLink, IoLinkPlugin
from edgeloop.realtime.ipc import Channel, Record, socketpair


def _linked_app() -> tuple[App, IoLink, Channel]:
    control_end, io_end = socketpair()
    link = IoLink(Channel(control_end))
    app = App()
    app.add_plugin(IoLinkPlugin(link))
    return app, link, Channel(io_end)


def test_inputs_are_stamped_with_the_tick_that_consumes_them() -> None:
    app, link, io = _linked_app()
    seen: list[IoInput] = []
    app.add_systems(
        FixedUpdate, lambda world: seen.extend(world.read(IoInput)), in_set=ControlLogic
    )
    app.run_for(2)
    io.send(0, [Record("modbus.plc1", "level", int(Priority.NORMAL), 1.25)])
    link.read_available()  # what the loop does when the channel becomes readable
    app.run_for(1)
    assert seen == [IoInput("modbus.plc1", "level", 1.25, 3)]


def test_outputs_leave_once_per_tick_in_one_batch() -> None:
    app, _, io = _linked_app()

    def command_pump(world: World) -> None:
        world.resource(IoLink).send("modbus.plc1", "pump", 0.5, Priority.HIGH)
        world.resource(IoLink).send("modbus.plc1", "valve", 1.0)

    app.add_systems(FixedUpdate, command_pump, in_set=ControlLogic)
    app.run_for(1)
    (batch,) = io.receive()
    assert batch.tick == 1
    assert [r.key for r in batch.records] == ["pump", "valve"]


def test_a_lost_io_link_raises_an_alarm_once() -> None:
    app, link, io = _linked_app()
    app.run_for(1)
    io.close()
    link.read_available()  # EOF makes the channel readable: the loop reads it at once
    app.run_for(3)
    alarm = app.world.resource(Alarms).get("io-link")
    assert alarm is not None and alarm.active and alarm.count == 1


def test_outputs_set_by_shutdown_wait_for_a_final_flush() -> None:
    app, link, io = _linked_app()
    app.add_systems(Shutdown, lambda world: world.resource(IoLink).send("p", "pump", 0.0))
    app.run_for(1)
    io.receive()
    app.shutdown()
    link.flush(app.time.tick)
    (batch,) = io.receive()
    assert batch.records == [Record("p", "pump", int(Priority.NORMAL), 0.0)]


def test_a_closed_channel_stops_waking_the_control_loop() -> None:
    from edgeloop.realtime.control_loop import ControlLoop  # noqa: PLC0415
    from edgeloop.realtime.control_process import watch_io_channel  # noqa: PLC0415

    app, link, io = _linked_app()
    loop = ControlLoop(app)
    watch_io_channel(loop, link)
    assert link.channel is not None
    fd = link.channel.fileno()
    assert loop.wake_sources() == {fd}
    io.close()
    loop.run(max_ticks=3)  # the EOF is read during the waits between ticks
    assert not link.up
    assert loop.wake_sources() == set()
    loop.close()
