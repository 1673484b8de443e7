"""LingerTuner waits longer for a group while the event loop has little idle time, shorter once
it idles; light load goes back to the shortest wait."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from auditlog_service.group_commit import GroupCommitter, LingerTuner

DELAYS = [0.0015, 0.003, 0.006, 0.012]


class World:
    """A clock and the loop's idle seconds, which advance together as groups are written."""

    def __init__(self) -> None:
        self.now = 0.0
        self.idle_s = 0.0

    def clock(self) -> float:
        return self.now

    def idle(self) -> float:
        return self.idle_s


def tuner_in(world: World) -> LingerTuner:
    return LingerTuner(DELAYS, clock=world.clock, idle=world.idle)


def run(
    tuner: LingerTuner,
    world: World,
    idle_at: Callable[[float], float],
    seconds: float,
    groups_per_s: float = 200.0,
    items_per_group: int = 16,
) -> Counter[float]:
    """Groups written in a world where the loop is idle `idle_at(wait)` of the time at each
    wait; the seconds spent at each wait."""
    spent: Counter[float] = Counter()
    end = world.now + seconds
    step = 1 / groups_per_s
    while world.now < end:
        delay = tuner.delay_s
        spent[delay] += step
        world.now += step
        world.idle_s += idle_at(delay) * step
        tuner.written(items_per_group)
    return spent


def table(shares: list[float]) -> Callable[[float], float]:
    return lambda delay: shares[DELAYS.index(delay)]


# Unary LogEvent at 64 closed-loop callers, fixed waits (ingest_ab_session49.md): the loop idles
# 5 % at 1.5 ms, 7 % at 6 ms and 18 % at 12 ms; fastest at 6 ms.
BUSY = table([0.04, 0.05, 0.06, 0.18])


def test_a_busy_loop_gets_the_longest_wait_that_keeps_it_busy() -> None:
    world = World()
    tuner = tuner_in(world)
    run(tuner, world, BUSY, seconds=30)
    assert tuner.chosen_s == 0.006
    spent = run(tuner, world, BUSY, seconds=30)
    assert spent[0.006] > 0.9 * 30
    assert spent[0.0015] == spent[0.003] == 0


def test_a_busy_loop_gets_there_quickly() -> None:
    world = World()
    tuner = tuner_in(world)
    # A step a judgement: two epochs of 0.25 s, and one left out after each change.
    run(tuner, world, BUSY, seconds=1.6)
    assert tuner.chosen_s == 0.006


def test_the_shortest_wait_stays_while_the_loop_idles() -> None:
    world = World()
    tuner = tuner_in(world)
    # 16 closed-loop callers: idle 16 % at 1.5 ms already (45 % at 6 ms).
    spent = run(tuner, world, table([0.16, 0.3, 0.45, 0.6]), seconds=60)
    assert tuner.chosen_s == 0.0015
    assert spent[0.0015] == pytest.approx(60, abs=0.01)


def test_a_wait_that_idles_the_loop_is_tried_less_and_less_often() -> None:
    world = World()
    tuner = tuner_in(world)
    early = run(tuner, world, BUSY, seconds=10)
    late = run(tuner, world, BUSY, seconds=120)
    assert early[0.012] > 0  # it did try
    assert late[0.012] / 120 < early[0.012] / 10 / 4
    assert late[0.012] < 0.03 * 120


def test_a_wait_that_starts_idling_the_loop_is_left_for_the_shorter_one() -> None:
    world = World()
    tuner = tuner_in(world)
    run(tuner, world, BUSY, seconds=30)
    assert tuner.chosen_s == 0.006
    # Fewer callers: every wait leaves the loop idle now.
    run(tuner, world, table([0.2, 0.3, 0.4, 0.5]), seconds=5)
    assert tuner.chosen_s == 0.0015


def test_light_load_goes_back_to_the_shortest_wait_at_once() -> None:
    world = World()
    tuner = tuner_in(world)
    run(tuner, world, BUSY, seconds=30)
    assert tuner.chosen_s == 0.006
    # A few groups an epoch (10 a second, epochs of 0.25 s) of few items: back within two.
    run(tuner, world, BUSY, seconds=0.55, groups_per_s=10, items_per_group=2)
    assert tuner.chosen_s == 0.0015


def test_few_large_groups_of_a_long_wait_are_not_light_load() -> None:
    world = World()
    tuner = tuner_in(world)
    # Unary LogEvent, 64 callers: the 12 ms wait writes 7-12 groups of 29-35 events an epoch.
    flat = table([0.04, 0.05, 0.06, 0.06])
    spent = run(tuner, world, flat, seconds=30, groups_per_s=30, items_per_group=32)
    assert tuner.chosen_s == 0.012
    assert spent[0.012] > 0.9 * 30 - 2.4


def test_the_idle_share_is_of_the_epoch_it_was_measured_in() -> None:
    world = World()
    tuner = tuner_in(world)
    # An idle stretch before the tuner's first look is not counted against the first epoch.
    world.idle_s = 1000.0
    run(tuner, world, BUSY, seconds=3)
    assert tuner.chosen_s == 0.006


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
