"""The ingest bench's grouped echo answers waiting calls together, and its unary section bounds
what a service that cost no more than the grouped echo would reach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.ingest import SharedWait, machine_us, unary_section


def side(calls_per_s: float, server: float, database: float, client: float) -> dict[str, Any]:
    return {
        "events_per_s": calls_per_s,
        "cpu_us_per_event": {"service": server, "database": database, "client": client},
    }


@pytest.mark.asyncio
async def test_calls_that_wait_together_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_later = loop.call_later

    def counted(delay: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__self__", None) is shared:  # not wait_for's own timeouts
            timers.append(delay)
        return call_later(delay, callback, *args, **kwargs)

    loop.call_later = counted  # type: ignore[method-assign]
    shared = SharedWait(0.001)
    try:
        first = [asyncio.ensure_future(shared.wait()) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*first), timeout=5)
        # A call after the release waits for a timer of its own.
        await asyncio.wait_for(shared.wait(), timeout=5)
    finally:
        del loop.call_later  # the instance attribute; the class's method again
    assert timers == [0.001, 0.001]


def test_the_machine_cpu_of_a_side_is_its_processes_together() -> None:
    assert machine_us(side(1000, 300, 0, 200)) == 500
    assert machine_us({"cpu_us_per_event": {"service": 300, "database": None}}) == 300


def test_the_bound_is_the_echos_machine_cpu_over_the_grouped_echos_plus_the_database() -> None:
    path = {
        "sides": {
            "service": side(1000, 600, 100, 250),
            "echo": side(4000, 300, 0, 200),  # 500 µs of the machine a call
            "echo_grouped": side(4500, 250, 0, 150),  # 400
        }
    }
    batch = {"sides": {"service": side(15000, 40, 50, 2)}}
    text = "\n".join(unary_section(path, 2, batch))
    assert "**1.00** of the bare echo" in text  # 500 / (400 + 100)
    assert "about **1.11**" in text  # 500 / (400 + 50)
    assert "| echo | 4,000/s | 300 µs | 0 µs | 200 µs | 500 µs | 2.00 |" in text
    without_batch = "\n".join(unary_section(path, 2, None))
    assert "1,000-event groups" not in without_batch


def test_results_from_before_the_grouped_echo_have_no_unary_section() -> None:
    path = {"sides": {"service": side(1000, 600, 100, 250), "echo": side(4000, 300, 0, 200)}}
    assert unary_section(path, 2, None) == []
