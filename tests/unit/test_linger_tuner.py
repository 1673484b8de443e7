"""LingerTuner keeps the shortest group-commit wait unless a longer one writes more a second."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from auditlog_service.group_commit import GroupCommitter, LingerTuner

DELAYS = [0.0015, 0.003, 0.006, 0.012]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(
    tuner: LingerTuner,
    clock: Clock,
    rate_at: Callable[[float], float],
    seconds: float,
    groups_per_s: float = 200.0,
    write_s: float | None = None,
) -> Counter[float]:
    """Groups written as a world where `rate_at(wait)` items a second go through would write
    them; the seconds spent at each wait. With `write_s`, a group is written every wait plus
    `write_s` (one group in flight at a time), else `groups_per_s` a second."""
    spent: Counter[float] = Counter()
    end = clock.now + seconds
    while clock.now < end:
        delay = tuner.delay_s
        step = 1 / groups_per_s if write_s is None else delay + write_s
        spent[delay] += step
        clock.now += step
        tuner.written(round(rate_at(delay) * step))
    return spent


def table(rates: list[float]) -> Callable[[float], float]:
    return lambda delay: rates[DELAYS.index(delay)]


def test_a_longer_wait_that_writes_more_a_second_is_kept() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    # A busy server: larger groups let more through, up to 6 ms; 12 ms adds nothing.
    run(tuner, clock, table([2000, 2400, 2800, 2800]), seconds=30)
    assert tuner.chosen_s == 0.006
    spent = run(tuner, clock, table([2000, 2400, 2800, 2800]), seconds=30)
    assert spent[0.006] > 0.8 * 30


def test_a_load_that_pays_for_longer_waits_gets_there_quickly() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    # A burst of closed-loop callers on a busy server: each longer wait up to 6 ms pays. A
    # probe that wins is followed by the next one the same way, not by one back where it was.
    spent = run(tuner, clock, table([2000, 2400, 2800, 2800]), seconds=2.6)
    assert tuner.chosen_s == 0.006
    assert spent[0.0015] < 1.4  # the first probe, after three epochs, and its judgement


def test_the_shortest_wait_stays_when_longer_ones_write_no_more() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    # Callers that send at their own pace (no queue): every wait writes as much.
    spent = run(tuner, clock, lambda delay: 1000, seconds=60)
    assert tuner.chosen_s == 0.0015
    assert spent[0.0015] > 0.8 * 60


def test_probes_that_lose_are_tried_less_and_less_often() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    # Few closed-loop callers: a longer wait only slows each of them down.
    rates = table([1000, 650, 400, 250])
    early = run(tuner, clock, rates, seconds=10)
    late = run(tuner, clock, rates, seconds=60)
    assert tuner.chosen_s == 0.0015
    assert early[0.003] > 0  # it did try
    assert late[0.003] / 60 < early[0.003] / 10 / 3
    assert late[0.003] < 0.05 * 60


def test_a_wait_that_stops_paying_is_left_for_the_shorter_one() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    run(tuner, clock, table([2000, 2400, 2800, 2800]), seconds=30)
    assert tuner.chosen_s == 0.006
    # The load changes: every wait writes the same again.
    run(tuner, clock, lambda delay: 1500, seconds=60)
    assert tuner.chosen_s == 0.0015


def test_light_load_goes_back_to_the_shortest_wait_at_once() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    run(tuner, clock, table([2000, 2400, 2800, 2800]), seconds=30)
    assert tuner.chosen_s == 0.006
    # A few groups an epoch (10 a second, epochs of 0.2 s): back within two epochs.
    run(tuner, clock, lambda delay: 20, seconds=0.45, groups_per_s=10)
    assert tuner.chosen_s == 0.0015


def test_few_large_groups_of_a_long_wait_are_not_light_load() -> None:
    clock = Clock()
    tuner = LingerTuner(DELAYS, clock=clock)
    # One group in flight, each written 12 ms after its wait: the 12 ms wait makes 8 or 9 groups
    # an epoch, of about 45 items each (unary LogEvent, 64 callers: 7-12 groups of 29-35).
    rates = table([1200, 1500, 1800, 1900])
    run(tuner, clock, rates, seconds=30, write_s=0.012)
    assert tuner.chosen_s == 0.006
    spent = run(tuner, clock, rates, seconds=30, write_s=0.012)
    assert spent[0.012] > 0  # probed
    assert spent[0.0015] == 0  # and never sent back to the shortest wait for it
    assert spent[0.006] > 0.8 * 30


def test_the_committer_tunes_only_with_room_for_a_longer_wait() -> None:
    async def write(items: list[int]) -> list[int]:
        return items

    fixed = GroupCommitter(write, max_items=10, max_delay_s=0.0015, longest_delay_s=0.002)
    tuned = GroupCommitter(write, max_items=10, max_delay_s=0.0015, longest_delay_s=0.012)
    assert fixed.chosen_delay_s == tuned.chosen_delay_s == 0.0015
    assert fixed._tuner is None
    assert tuned._tuner is not None
    assert tuned._tuner._delays == DELAYS


def test_the_tuned_wait_is_for_a_trickle_of_small_calls() -> None:
    async def write(items: list[int]) -> list[int]:
        return items

    committer = GroupCommitter(
        write, max_items=1000, max_delay_s=0.0015, longest_delay_s=0.012, parallel_min_items=100
    )
    assert committer._tuner is not None
    committer._tuner._level = 2  # as if a longer wait had paid
    committer._pending = [(0, None, 0, None)] * 99  # type: ignore[list-item]
    assert committer._linger_s() == 0.006
    # A hundred events waiting (stream messages, batches): the shortest wait.
    committer._pending = [(0, None, 0, None)] * 100  # type: ignore[list-item]
    assert committer._linger_s() == 0.0015


async def _written(*futures: Any) -> list[Any]:
    # Bounded far below the waits under test: a wait that is not cut short fails the test.
    return await asyncio.wait_for(asyncio.gather(*futures), timeout=5)


@pytest.mark.asyncio
async def test_a_group_that_fills_up_stops_waiting() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        return items

    committer = GroupCommitter(write, max_items=4, max_delay_s=60)
    first = committer.submit_nowait(1)
    await asyncio.sleep(0)  # the scheduler starts its wait
    rest = committer.submit_batch([2, 3, 4])
    assert await _written(first, rest) == [1, [2, 3, 4]]
    assert writes == [[1, 2, 3, 4]]


@pytest.mark.asyncio
async def test_a_batch_ends_a_tuned_wait_for_a_trickle() -> None:
    async def write(items: list[int]) -> list[int]:
        return items

    committer = GroupCommitter(
        write, max_items=1000, max_delay_s=1.0, longest_delay_s=64.0, parallel_min_items=100
    )
    assert committer._tuner is not None
    committer._tuner._level = len(committer._tuner._delays) - 1  # a minute's wait
    first = committer.submit_nowait(1)
    await asyncio.sleep(0)
    batch = committer.submit_batch(list(range(100)))
    assert await _written(first, batch) == [1, list(range(100))]
