"""The event-cost bench times every step of the batch path and sums them against the C floor."""

from __future__ import annotations

import pytest

from bench.event_cost import RULES_PREPARE, STEPS, measure


@pytest.mark.parametrize("kind", ["general", "cobrowse"])
def test_every_step_is_timed_and_summed_against_the_floor(kind: str) -> None:
    result = measure(kind, repetitions=1)
    us = result["us_per_event"]
    assert set(us) == {name for name, _, _ in STEPS} | {RULES_PREPARE}
    # Each one timed; general events have no session to slot.
    untimed = {"slots"} if kind == "general" else set()
    assert {name for name, value in us.items() if value <= 0} == untimed
    floor = sum(us[name] for name, is_floor, _ in STEPS if is_floor)
    assert result["floor_us"] == pytest.approx(floor, abs=0.01)
    assert result["steps_us"] == pytest.approx(sum(us[name] for name, _, _ in STEPS), abs=0.01)
    assert result["ratio"] == pytest.approx(result["steps_us"] / result["floor_us"], abs=0.01)
    assert result["request_bytes_per_event"] > 0
