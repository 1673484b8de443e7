"""The group-wait bench counts a turn's calls by its window and schedules its open loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.group_wait import Caller, Window, due_calls, open_loop, turn_order


def test_latency_counts_calls_due_in_the_window_throughput_those_answered_in_it() -> None:
    window = Window(start=10.0, end=12.0)
    window.record(due=9.5, answered_at=10.5)  # due before: answered in, no latency
    window.record(due=10.0, answered_at=10.25)
    window.record(due=11.0, answered_at=13.0)  # answered after: its latency, not its answer
    window.record(due=11.5, answered_at=11.6, code="UNAVAILABLE")
    window.record(due=12.0, answered_at=12.0)  # due at the end: outside
    assert window.latencies_s == [0.25, 2.0]
    assert window.answered == 2
    assert window.errors == {"UNAVAILABLE": 1}
    figures = window.figures(server_cpu_s=0.001)
    assert figures["calls_per_s"] == 1.0
    assert figures["p99_ms"] == 2000.0
    assert figures["server_us_per_call"] == 500.0


def test_calls_fall_due_at_the_rate_from_the_start() -> None:
    assert due_calls(-0.1, 1000) == 0
    assert due_calls(0.0, 1000) == 1  # the first at once
    assert due_calls(0.0005, 1000) == 1
    assert due_calls(0.001, 1000) == 2
    assert due_calls(2.0, 500) == 1001


def test_turns_alternate_their_order() -> None:
    assert turn_order(["fixed", "tuned"], 0) == ["fixed", "tuned"]
    assert turn_order(["fixed", "tuned"], 1) == ["tuned", "fixed"]
    assert turn_order(["fixed", "tuned"], 2) == ["fixed", "tuned"]


class _InstantStub:
    """A LogEvent stub that answers at once and remembers what it was sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def LogEvent(self, request: int, **options: Any) -> None:
        self.sent.append(request)


@pytest.mark.asyncio
async def test_open_loop_sends_each_request_once_until_its_pool_runs_out() -> None:
    stub = _InstantStub()
    window = Window(start=0.0, end=float("inf"))
    caller = Caller([stub], list(range(50)), window)
    # 50 requests at 10,000 a second run out within about 5 ms; the window never ends.
    cut_short = await asyncio.wait_for(open_loop(caller, 10_000.0, time.perf_counter(), window), 30)
    assert cut_short
    assert sorted(stub.sent) == list(range(50))
