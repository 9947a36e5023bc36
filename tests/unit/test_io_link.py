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
    from edgeloop.realtime.control_process import IoChannelWatch  # noqa: PLC0415

    app, link, io = _linked_app()
    loop = ControlLoop(app)
    IoChannelWatch(loop, link)
    (channel,) = link.channels
    assert channel is not None
    fd = channel.fileno()
    assert loop.wake_sources() == {fd}
    io.close()
    loop.run(max_ticks=3)  # the EOF is read during the waits between ticks
    assert not link.up
    assert loop.wake_sources() == set()
    loop.close()


def test_a_flood_is_handed_over_a_bounded_number_per_tick_and_left_in_the_socket() -> None:
    control_end, io_end = socketpair()
    link = IoLink(Channel(control_end), records_per_tick=2)
    app = App()
    app.add_plugin(IoLinkPlugin(link))
    per_tick: list[int] = []
    app.add_systems(
        FixedUpdate, lambda world: per_tick.append(len(world.read(IoInput))), in_set=ControlLogic
    )
    io = Channel(io_end)
    for batch in range(5):
        io.send(0, [Record("t", str(batch * 4 + i), int(Priority.HIGH), i) for i in range(4)])
    link.read_available()
    assert len(link.inbox) == 4, "one wake-up reads about a tick's worth (whole batches)"
    for _ in range(5):
        link.read_available()
    assert link.full and len(link.inbox) == 8, "read ahead stops at 4 ticks' worth"
    app.run_for(3)
    assert per_tick == [2, 2, 2]
    for _ in range(10):
        link.read_available()  # as the loop does when the socket is readable again
        app.run_for(1)
    assert sum(per_tick) == 20, "nothing lost"
