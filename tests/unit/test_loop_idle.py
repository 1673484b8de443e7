"""loop_idle counts the time its loop waited with nothing to run, and only that."""

from __future__ import annotations

import asyncio

import pytest

from auditlog_service import loop_idle
from auditlog_service.server import run_on_loop


class Ticks:
    """A clock that moves one second each time it is read: an idle count in seconds is then
    twice the number of blocking selects, whatever they took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def _ready_turns_then_a_wait() -> tuple[float, float]:
    """The idle seconds counted over 200 turns of the loop with a callback always ready, then
    over a wait for a timer with nothing else to run."""
    start = loop_idle.idle_seconds()
    for _ in range(200):
        await asyncio.sleep(0)  # this task is ready again at once: the loop never blocks
    ready = loop_idle.idle_seconds() - start
    timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.001, timer.set_result, None)
    await timer
    waiting = loop_idle.idle_seconds() - start - ready
    return ready, waiting


def test_the_loop_counts_its_blocking_waits_and_nothing_else() -> None:
    with asyncio.Runner(loop_factory=lambda: loop_idle.new_event_loop(Ticks())) as runner:
        ready, waiting = runner.run(_ready_turns_then_a_wait())
    assert ready == 0.0
    assert waiting >= 1.0  # at least one blocking select: the timer's
    assert waiting % 1.0 == 0.0  # each one counted as the clock moved across it


def test_the_service_runs_on_that_loop_unless_told_uvloop() -> None:
    async def counted() -> bool:
        return asyncio.get_running_loop() in loop_idle._selectors

    assert run_on_loop("asyncio", counted())
    assert loop_idle.run(counted())


def test_another_loop_or_none_gets_the_threads_time_off_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_idle.time, "monotonic", lambda: 100.0)
    monkeypatch.setattr(loop_idle.time, "thread_time", lambda: 30.0)
    # No loop runs here (the metrics read the tuner from outside it): asking must not raise.
    assert loop_idle.idle_seconds() == 70.0

    async def asked() -> float:
        return loop_idle.idle_seconds()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(asked()) == 70.0
    finally:
        loop.close()
