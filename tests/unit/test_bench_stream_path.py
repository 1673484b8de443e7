"""The stream-path bench runs every message through the writer to its acks, warm and cold."""

from __future__ import annotations

import asyncio

from bench.stream_path import (
    EVENTS_PER_MESSAGE,
    MESSAGES,
    WRITTEN_OVER_MIB,
    _writer,
    measure,
    one_pass,
    stream_messages,
)


def test_a_pass_acknowledges_every_event_and_writes_over_between_messages() -> None:
    calls: list[int] = []

    async def run() -> tuple[float, int]:
        return await one_pass(stream_messages(), _writer(), lambda: calls.append(1))

    _, acked = asyncio.run(run())
    assert acked == MESSAGES * EVENTS_PER_MESSAGE
    # After each message is submitted and after each is answered.
    assert len(calls) == 2 * MESSAGES


def test_every_setting_is_measured_against_the_warm_run() -> None:
    result = asyncio.run(measure(repetitions=1))
    settings = {str(mib) for mib in WRITTEN_OVER_MIB}
    assert set(result["us_per_event"]) == set(result["ratio_to_warm"]) == settings
    assert result["ratio_to_warm"]["0"] == 1.0
    for mib in settings:
        expected = result["us_per_event"][mib] / result["us_per_event"]["0"]
        assert abs(result["ratio_to_warm"][mib] - expected) < 0.01
