"""loop_idle counts the time its loop waited with nothing to run, and only that."""

from __future__ import annotations

import asyncio

from auditlog_service import loop_idle
from auditlog_service.server import run_on_loop


async def _busy_then_waiting(wait_s: float) -> tuple[float, float]:
    """The idle seconds counted over 200 turns of the loop with a callback always ready, then
    over a wait of `wait_s` with nothing else to run."""
    start = loop_idle.idle_seconds()
    for _ in range(200):
        await asyncio.sleep(0)  # this task is ready again at once: the loop never blocks
    busy = loop_idle.idle_seconds() - start
    await asyncio.sleep(wait_s)
    waiting = loop_idle.idle_seconds() - start - busy
    return busy, waiting


def test_the_loop_counts_its_blocking_waits_and_nothing_else() -> None:
    busy, waiting = loop_idle.run(_busy_then_waiting(0.02))
    assert busy == 0.0
    # The selector's timeout is rounded up to whole milliseconds, never down.
    assert waiting >= 0.019


def test_the_service_runs_on_that_loop_unless_told_uvloop() -> None:
    busy, _ = run_on_loop("asyncio", _busy_then_waiting(0.0))
    assert busy == 0.0


def test_another_loop_gets_the_threads_time_off_the_cpu() -> None:
    loop = asyncio.new_event_loop()
    try:
        _, waiting = loop.run_until_complete(_busy_then_waiting(0.02))
    finally:
        loop.close()
    assert waiting >= 0.019  # asleep: off the CPU


def test_without_a_running_loop_the_threads_time_off_the_cpu_stands_in() -> None:
    # The metrics read the tuner from outside the loop; asking must not raise.
    first = loop_idle.idle_seconds()
    assert loop_idle.idle_seconds() >= first
