"""The event-cost bench times every step of the batch path and sums them against the C floor."""

from __future__ import annotations

import pytest

from auditlog_service import convert
from auditlog_service.ingest import EventWriter
from bench.event_cost import (
    EVENTS,
    RULES_PREPARE,
    STEPS,
    _Repository,
    batch_wire,
    measure,
    one_pass,
)


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


def test_cold_runs_the_hook_before_every_timed_step() -> None:
    wire = batch_wire("cobrowse")
    preparer = convert.EventPreparer("bench")
    writer = EventWriter(_Repository(), preparer, max_group=EVENTS, max_delay_s=0.0)  # type: ignore[arg-type]
    calls: list[int] = []
    took = one_pass(wire, writer, preparer, lambda: calls.append(1))
    assert len(calls) == len(took) == len(STEPS) + 1


def test_cold_measure_reports_every_step() -> None:
    result = measure("general", repetitions=1, cold=True)
    assert set(result["us_per_event"]) == {name for name, _, _ in STEPS} | {RULES_PREPARE}
