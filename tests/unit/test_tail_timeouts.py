"""An idle tail's wait ends on a grid that every wait shares: heartbeats come in a few turns."""

from __future__ import annotations

import asyncio
import random

import pytest

from auditlog_service.tail import SessionWatch, shared_deadline


def test_deadlines_are_grid_points_within_a_twentieth_of_the_timeout() -> None:
    rng = random.Random(7)
    for timeout_s in (0.2, 1.0, 10.0, 37.5):
        grid = timeout_s / 10
        for _ in range(1000):
            now = rng.uniform(0, 100_000)
            deadline = shared_deadline(now, timeout_s)
            assert abs(deadline - (now + timeout_s)) <= timeout_s / 20 + 1e-9
            steps = deadline / grid
            assert abs(steps - round(steps)) < 1e-6


def test_waits_begun_over_one_interval_end_at_eleven_points_at_most() -> None:
    # A thousand tails that went idle at different moments of 10 s: without the grid, a
    # thousand separate timeouts (one turn of the event loop each).
    rng = random.Random(11)
    starts = [rng.uniform(5_000, 5_010) for _ in range(1000)]
    deadlines = {shared_deadline(start, 10.0) for start in starts}
    assert len(deadlines) <= 11


def test_a_zero_timeout_is_now() -> None:
    assert shared_deadline(123.456, 0.0) == 123.456


@pytest.mark.asyncio
async def test_a_wait_ends_at_once_when_the_head_moves() -> None:
    watch = SessionWatch(("t", "s"), 3)
    waiting = asyncio.create_task(watch.wait_beyond(3, 60.0))
    await asyncio.sleep(0)
    watch.advance(4)
    assert await waiting is True
    assert await watch.wait_beyond(3, 60.0) is True  # already beyond: no wait
