"""Device health states and the retry backoff."""

from __future__ import annotations

import random

from edgeloop.drivers.health import Backoff, HealthTracker


def test_health_goes_online_degraded_offline_and_back() -> None:
    health = HealthTracker("test", offline_after=3)
    assert health.state == "connecting" and not health.usable
    health.good(0.002, now=100.0)
    assert (health.state, health.rtt_ms, health.last_good_read) == ("online", 2.0, 100.0)
    health.error("timeout", "no answer")
    assert health.state == "degraded" and health.usable
    health.error("timeout", "no answer")
    health.error("exception", "code 2")
    assert health.state == "offline" and not health.usable
    assert health.errors == {"timeout": 2, "exception": 1}
    assert health.consecutive_errors == 3
    health.good(0.001)
    assert (health.state, health.consecutive_errors) == ("online", 0)
    assert health.snapshot()["errors"] == [("exception", 1), ("timeout", 2)], "counts are kept"


def test_a_disconnect_is_offline_at_once() -> None:
    health = HealthTracker("test")
    health.good(0.001)
    health.error("disconnect", "connection reset")
    assert health.state == "offline"


def test_health_marks_a_snapshot_due_only_on_news() -> None:
    health = HealthTracker("test")
    health.snapshot()
    health.good(0.001)
    assert health.changed, "connecting -> online is news"
    health.snapshot()
    health.good(0.001)
    assert not health.changed, "another good read is not"


def test_backoff_doubles_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(initial_s=0.5, max_s=4.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == len(delays), "jittered: a fleet does not retry in lockstep"
    backoff.reset()
    assert backoff.next_delay() <= 0.6
