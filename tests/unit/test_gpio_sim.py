"""The simulated GPIO chip: lines of this process, driven through its socket from outside."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop import App, FixedUpdate, SensorInput
from edgeloop.drivers.gpio import GpioError, GpioLine, InputLine, open_input, open_output
from edgeloop.drivers.gpio.sim import LINES, SOCKET_NAME
from edgeloop.drivers.gpio.sim_client import NoSimChip, Refused, get_level, set_level
from edgeloop.realtime.control_loop import ControlLoop
from edgeloop.world import World

DEADLINE_S = 5.0  # an edge comes in microseconds; this bounds a loaded machine


def sim(offset: int, **settings: object) -> GpioLine:
    return GpioLine.model_validate({"chip": "sim", "offset": offset, **settings})


def readable(line: InputLine, timeout: float = DEADLINE_S) -> bool:
    return bool(select.select([line], [], [], timeout)[0])


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # every test closes its lines: the chip goes with the last one
    assert not (tmp_path / SOCKET_NAME).exists()


def test_outside_set_makes_the_input_readable_and_active(state_dir: Path) -> None:
    button = open_input(sim(3), state_dir)
    try:
        assert not button.active()
        assert not readable(button, 0)
        set_level(state_dir, 3, 1)
        assert readable(button)
        assert button.active()
        assert button.read_edges() == 1
        assert not readable(button, 0)  # drained: a loop waiting on it does not spin
        assert button.read_edges() == 0
    finally:
        button.close()


def test_each_level_change_is_one_edge_and_a_repeat_none(state_dir: Path) -> None:
    button = open_input(sim(3), state_dir)
    try:
        for level in (1, 1, 0, 0, 1):
            set_level(state_dir, 3, level)
        assert button.read_edges() == 3  # set answers once applied: all edges are counted
        assert button.active()
    finally:
        button.close()


def test_active_low_inverts_the_logical_value(state_dir: Path) -> None:
    button = open_input(sim(4, active_low=True, bias="pull_up"), state_dir)
    try:
        assert not button.active()  # pulled up, not pressed
        set_level(state_dir, 4, 0)
        assert readable(button)
        assert button.active()
    finally:
        button.close()


@pytest.mark.parametrize(
    ("bias", "level"), [("pull_up", 1), ("pull_down", 0), ("as_is", 0), ("disabled", 0)]
)
def test_an_undriven_input_reads_its_bias(state_dir: Path, bias: str, level: int) -> None:
    line = open_input(sim(6, bias=bias), state_dir)
    try:
        assert get_level(state_dir, 6) == level
        assert line.active() is bool(level)
    finally:
        line.close()


def test_a_level_driven_before_the_line_is_opened_is_its_level(state_dir: Path) -> None:
    holder = open_output(sim(0), state_dir, initial=False)  # keeps the chip open
    set_level(state_dir, 7, 0)
    line = open_input(sim(7, bias="pull_up"), state_dir)
    try:
        assert not line.active()  # driven low outside overrides the pull-up
        assert not readable(line, 0)  # opening is no edge
    finally:
        line.close()
        holder.close()


def test_get_answers_the_level_the_process_drives_an_output_to(state_dir: Path) -> None:
    lamp = open_output(sim(5), state_dir, initial=True)
    inverted = open_output(sim(9, active_low=True), state_dir, initial=True)
    try:
        assert get_level(state_dir, 5) == 1
        assert get_level(state_dir, 9) == 0
        lamp.set(False)
        inverted.set(False)
        assert get_level(state_dir, 5) == 0
        assert get_level(state_dir, 9) == 1
    finally:
        lamp.close()
        inverted.close()


def test_an_output_is_not_driven_from_outside(state_dir: Path) -> None:
    lamp = open_output(sim(5), state_dir, initial=True)
    try:
        with pytest.raises(Refused, match="line 5 is an output"):
            set_level(state_dir, 5, 0)
        assert get_level(state_dir, 5) == 1
    finally:
        lamp.close()


def test_a_change_reverted_within_the_debounce_period_is_no_edge(state_dir: Path) -> None:
    button = open_input(sim(2, debounce_ms=300), state_dir)
    try:
        for level in (1, 0, 1, 0, 1):  # bounces, then held
            set_level(state_dir, 2, level)
        assert readable(button)
        assert button.read_edges() == 1  # without debounce: 5
        assert button.active()
    finally:
        button.close()


def test_a_debounced_edge_comes_once_the_level_held_for_the_period(state_dir: Path) -> None:
    button = open_input(sim(2, debounce_ms=100), state_dir)
    try:
        started = time.monotonic()
        set_level(state_dir, 2, 1)
        assert readable(button)
        assert time.monotonic() - started >= 0.1
        assert button.read_edges() == 1
        assert button.active()
    finally:
        button.close()


def test_a_debounced_input_reports_its_old_level_until_the_edge(state_dir: Path) -> None:
    button = open_input(sim(2, debounce_ms=1000), state_dir)
    try:
        started = time.monotonic()
        set_level(state_dir, 2, 1)
        assert get_level(state_dir, 2) == 1  # on the pin at once ...
        old, pending = button.active(), not readable(button, 0)
        if time.monotonic() - started < 0.9:  # this test ran on time: the period is not over
            assert (old, pending) == (False, True)
        assert readable(button)
        assert button.active()  # ... reported once held
        assert time.monotonic() - started >= 1.0
    finally:
        button.close()


def test_lines_of_one_process_share_its_chip(state_dir: Path) -> None:
    first, second = open_input(sim(0), state_dir), open_input(sim(1), state_dir)
    try:
        set_level(state_dir, 1, 1)
        assert readable(second)
        assert not readable(first, 0)
        assert second.read_edges() == 1
        assert (first.active(), second.active()) == (False, True)
        first.close()
        set_level(state_dir, 1, 0)  # the chip lives on with its other line
        assert readable(second)
        assert not second.active()
    finally:
        first.close()
        second.close()


def test_two_state_dirs_have_a_chip_each(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first, second = open_input(sim(0), one), open_input(sim(0), two)
    try:
        set_level(two, 0, 1)
        assert readable(second)
        assert not readable(first, 0)
    finally:
        first.close()
        second.close()


def test_a_line_is_requested_once(state_dir: Path) -> None:
    line = open_input(sim(3), state_dir)
    try:
        with pytest.raises(GpioError, match="sim line 3: busy"):
            open_output(sim(3), state_dir, initial=False)
    finally:
        line.close()


def test_an_offset_past_the_chip_is_refused(state_dir: Path) -> None:
    with pytest.raises(GpioError, match=f"sim line {LINES}: the simulated chip has lines 0 to"):
        open_input(sim(LINES), state_dir)


def test_a_stale_socket_of_a_killed_process_is_replaced(state_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(state_dir / SOCKET_NAME))
    assert (state_dir / SOCKET_NAME).exists()
    line = open_input(sim(3, bias="pull_up"), state_dir)
    try:
        assert get_level(state_dir, 3) == 1
    finally:
        line.close()


def test_a_chip_another_process_serves_is_not_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as alive:
        alive.bind(str(tmp_path / SOCKET_NAME))
        with pytest.raises(GpioError, match=r"sim line 3: .*another process's simulated chip"):
            open_input(sim(3), tmp_path)
        assert (tmp_path / SOCKET_NAME).exists()


def test_a_malformed_request_is_answered_with_the_usage(state_dir: Path) -> None:
    line = open_input(sim(3), state_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.bind("")
            client.settimeout(DEADLINE_S)
            for request in (b"press 3", b"set 3 2", b"get 99", b"\xff\xfe", b""):
                client.sendto(request, str(state_dir / SOCKET_NAME))
                assert client.recv(256).startswith(b"error ")
        assert not line.active()
    finally:
        line.close()


def test_an_unbound_sender_is_obeyed_unanswered(state_dir: Path) -> None:
    line = open_input(sim(3), state_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"set 3 1", str(state_dir / SOCKET_NAME))
        assert readable(line)
        assert line.active()
    finally:
        line.close()


def test_no_chip_says_to_run_edgeloop_with_chip_sim(tmp_path: Path) -> None:
    with pytest.raises(NoSimChip, match=r"is `edgeloop run` running with chip: sim\?"):
        get_level(tmp_path, 0)


def test_the_control_loop_wakes_for_an_edge_once_and_not_at_the_next_tick(
    state_dir: Path,
) -> None:
    app = App(rate_hz=5)  # 200 ms between ticks
    loop = ControlLoop(app)
    button = open_input(sim(3), state_dir)
    woken_at: list[tuple[int, int, bool]] = []

    def on_edge() -> None:
        woken_at.append((app.time.tick, button.read_edges(), button.active()))

    def press_at_tick_2(world: World) -> None:
        if app.time.tick == 2:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.sendto(b"set 3 1", str(state_dir / SOCKET_NAME))

    loop.add_wake_source(button.fileno(), on_edge)
    app.add_systems(FixedUpdate, press_at_tick_2, in_set=SensorInput)
    try:
        loop.run(max_ticks=5)
    finally:
        loop.remove_wake_source(button.fileno())
        loop.close()
        button.close()
    assert woken_at == [(2, 1, True)]  # in the wait after tick 2, and only once
