"""The outside of the simulated chip: ``set`` and ``get`` a line of a running process's
chip through its socket (the protocol is in ``sim``)."""

from __future__ import annotations

import socket
from pathlib import Path

from edgeloop.drivers.gpio.sim import MAX_DATAGRAM, socket_path

ANSWER_TIMEOUT_S = 2.0  # the chip's thread answers at once; this only bounds a stuck one


class NoSimChip(Exception):
    """Nothing answers at the state directory's chip socket."""


class Refused(Exception):
    """The chip answered ``error <why>``."""


def set_level(state_dir: Path, offset: int, level: int) -> None:
    """Drive ``offset``'s physical level to ``level`` (0 or 1); returns once applied."""
    _ask(state_dir, f"set {offset} {level}")


def get_level(state_dir: Path, offset: int) -> int:
    """The physical level of ``offset`` (0 or 1)."""
    return int(_ask(state_dir, f"get {offset}"))


def _ask(state_dir: Path, request: str) -> str:
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.bind("")  # an abstract address of its own, for the answer
        client.settimeout(ANSWER_TIMEOUT_S)
        try:
            client.sendto(request.encode(), str(path))
            answer = client.recv(MAX_DATAGRAM).decode("ascii", "replace")
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoSimChip(
                f"no simulated GPIO chip at {path}: is `edgeloop run` running with chip: sim?"
            ) from None
        except PermissionError:
            raise NoSimChip(
                f"{path}: permission denied: run as the appliance's user (or root)"
            ) from None
        except TimeoutError:
            raise NoSimChip(f"the simulated GPIO chip at {path} did not answer") from None
    if answer.startswith("error "):
        raise Refused(answer.removeprefix("error "))
    return answer
