"""Connection ids: unique across io workers, so the control process knows which worker
holds a connection when a system sends to it.

An id is ``worker << WORKER_SHIFT | n``, with n counting from 1 in each worker: worker 0
(the only one by default) hands out 1, 2, 3, ... All ids stay below 2**53, so JSON and
JavaScript numbers carry them exactly. Id 0 means every connection (a broadcast).
"""

from __future__ import annotations

import itertools

WORKER_SHIFT = 40  # 10**12 connections per worker before an id could reach the next


def connection_ids(worker: int) -> itertools.count[int]:
    """The ids one io worker hands out, in order."""
    return itertools.count((worker << WORKER_SHIFT) + 1)


def worker_of(connection: int) -> int:
    """The io worker holding ``connection`` (a positive id)."""
    return connection >> WORKER_SHIFT
