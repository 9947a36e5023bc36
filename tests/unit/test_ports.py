"""edgeloop.sim.ports: ports to tell a child in advance, free when drawn and outside the
range the kernel hands out by itself."""

from __future__ import annotations

import socket

from edgeloop.sim.ports import EPHEMERAL_RANGE, LOWEST, free_port, free_port_run


def ephemeral_start() -> int:
    return int(EPHEMERAL_RANGE.read_text().split()[0])


def test_a_run_of_ports_is_free_for_tcp_and_udp_and_below_the_ephemeral_range() -> None:
    base = free_port_run(5)
    assert base >= LOWEST and base + 5 <= ephemeral_start()
    sockets = []
    try:
        for port in range(base, base + 5):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                sockets.append(socket.socket(socket.AF_INET, kind))
                sockets[-1].bind(("127.0.0.1", port))
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_never_drawn() -> None:
    held = []
    try:
        for _ in range(20):
            held.append(socket.socket())
            held[-1].bind(("127.0.0.1", free_port()))
        ports = {sock.getsockname()[1] for sock in held}
        assert len(ports) == 20
        assert not ports & {free_port() for _ in range(200)}
    finally:
        for sock in held:
            sock.close()
