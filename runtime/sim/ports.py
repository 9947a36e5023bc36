"""Ports to tell a child process before it starts: tests, benchmarks, demos side by side.

A server that can bind port 0 and report the port it got should do that instead: nothing
can take a port it already holds. A child that must be told its port in advance cannot,
and "bind port 0, close, hand the number on" races with every other port-0 bind and
outgoing connection on the machine, which the kernel serves from the same ephemeral
range. So these ports are drawn at random from below that range (where the kernel never
hands out a port by itself) and checked free for TCP and UDP when drawn: only another
explicit choice can then collide, and a random draw makes that unlikely.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

HOST = "127.0.0.1"
LOWEST = 10_000  # below this: well-known and registered services' usual ports
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_DEFAULT = 32_768  # Linux's default start of the range, if it cannot be read
ATTEMPTS = 200


def free_port(host: str = HOST) -> int:
    """A port free for TCP and UDP on ``host`` now, outside the kernel's ephemeral range."""
    return free_port_run(1, host)


def free_port_run(count: int, host: str = HOST) -> int:
    """The first of ``count`` consecutive ports free for TCP and UDP on ``host`` now."""
    highest = _ephemeral_start() - count
    if highest <= LOWEST:
        raise RuntimeError(f"no room for {count} ports below the ephemeral range")
    for _ in range(ATTEMPTS):
        base = LOWEST + secrets.randbelow(highest - LOWEST)
        if all(_is_free(port, host) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found in {ATTEMPTS} draws")


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_DEFAULT


def _is_free(port: int, host: str) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True
