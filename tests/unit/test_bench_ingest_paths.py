"""bench.ingest's paths: what each stream path's callers send."""

from __future__ import annotations

from bench.ingest import PATHS, caller_events, requests_of


def test_a_stream_path_sends_messages_of_the_batch_asked_for() -> None:
    spec = PATHS["stream-general"]
    events = caller_events(spec, "t", 0, 250)
    requests = requests_of(spec, events, 100)
    assert [len(request.events) for request in requests] == [100, 100, 50]
    assert [event for request in requests for event in request.events] == events


def test_the_sdk_stream_path_sends_the_events_and_leaves_the_messages_to_the_sdk() -> None:
    spec = PATHS["stream-sdk"]
    assert spec.sdk
    assert spec.rpc == "StreamEvents"
    events = caller_events(spec, "t", 0, 250)
    assert requests_of(spec, events, 100) == events
