"""BatchingLogger logic against a scripted stand-in for AuditLogClient.log_events.

The stand-in records every call and answers as a test scripts it (stored, per-event errors, or a
failed call), optionally holding a call until the test opens its gate. The real server and
database are exercised in tests/integration/test_sdk_batching.py.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from auditlog import (
    LOGGER_CLOSED,
    QUEUE_FULL,
    AuditLogError,
    BatchingLogger,
    DeliveryFailure,
    general_event,
    new_event_id,
)
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2

Event = audit_event_pb2.AuditEvent
Result = service_pb2.LogEventResult
DEADLINE_S = 5.0  # bounds every wait on the background task; never reached when things work

Responder = Callable[[int, list[Event]], Awaitable[service_pb2.LogEventsResponse]]


def stored(events: Sequence[Event], *, already: bool = False) -> service_pb2.LogEventsResponse:
    return service_pb2.LogEventsResponse(
        results=[Result(event=e, already_stored=already) for e in events]
    )


def event_error(
    code: grpc.StatusCode,
    reason: enums_pb2.ErrorReason.ValueType = enums_pb2.ERROR_REASON_UNSPECIFIED,
    violations: Sequence[tuple[str, str]] = (),
) -> Result:
    return Result(
        error=service_pb2.EventError(
            code=code.value[0],
            reason=reason,
            message=f"{code.name} for this event",
            field_violations=[
                service_pb2.FieldViolation(field=f, description=d) for f, d in violations
            ],
        )
    )


def call_error(code: grpc.StatusCode, reason: str = "") -> AuditLogError:
    """The AuditLogError the client raises for a failed call (with an ErrorInfo when `reason`)."""
    trailing = grpc.aio.Metadata()
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="auditlog.v1"))
        status = rpc_status.to_status(
            status_pb2.Status(code=code.value[0], message="failed", details=[info])
        )
        trailing = grpc.aio.Metadata(*status.trailing_metadata)
    return AuditLogError(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "failed", None))


class ScriptedSender:
    """Stands in for AuditLogClient: records each LogEvents call and answers as scripted."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.calls: list[list[Event]] = []
        self.gates: dict[int, asyncio.Event] = {}  # call index -> held until set
        self._respond = respond
        self._called = asyncio.Condition()

    async def log_events(
        self,
        events: Sequence[Event],
        *,
        timeout_s: float | None = None,
        acks_only: bool = False,
    ) -> service_pb2.LogEventsResponse:
        index = len(self.calls)
        batch = [Event.FromString(e.SerializeToString()) for e in events]
        self.calls.append(batch)
        async with self._called:
            self._called.notify_all()
        if index in self.gates:
            await self.gates[index].wait()
        if self._respond is None:
            return stored(batch)
        return await self._respond(index, batch)

    async def wait_calls(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE_S), self._called:
            await self._called.wait_for(lambda: len(self.calls) >= count)

    def sent_ids(self) -> list[list[str]]:
        return [[e.id for e in call] for call in self.calls]


class Reports:
    """Collects on_undelivered reports."""

    def __init__(self) -> None:
        self.items: list[tuple[Event, DeliveryFailure]] = []

    def __call__(self, event: Event, failure: DeliveryFailure) -> None:
        self.items.append((event, failure))

    def ids(self) -> list[str]:
        return [e.id for e, _ in self.items]


def new_event(n: int) -> Event:
    return general_event(
        "acme", f"agent-{n}", payloads_pb2.StartCallAttributes(call_id=f"call-{n}")
    )


def balanced(logger: BatchingLogger) -> bool:
    return (
        logger.delivered + logger.undelivered + logger.dropped_queue_full == logger.logged
        and logger.pending == 0
    )


async def flush(logger: BatchingLogger) -> None:
    async with asyncio.timeout(DEADLINE_S):
        await logger.flush()


# ---- batching --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_full_batches_go_out_without_waiting_and_in_log_order() -> None:
    sender = ScriptedSender()
    logger = BatchingLogger(sender, max_batch=10, max_delay_s=3600)
    ids = [logger.log(new_event(n)) for n in range(25)]
    await sender.wait_calls(2)
    assert [len(call) for call in sender.calls] == [10, 10]
    assert logger.queued == 5  # neither a full batch nor old enough: waits for more
    await flush(logger)
    assert [len(call) for call in sender.calls] == [10, 10, 5]
    assert [i for call in sender.sent_ids() for i in call] == ids
    assert logger.delivered == 25
    assert balanced(logger)
    await logger.close()


@pytest.mark.asyncio
async def test_a_partial_batch_goes_out_after_max_delay() -> None:
    sender = ScriptedSender()
    logger = BatchingLogger(sender, max_batch=1000, max_delay_s=0.02)
    ids = [logger.log(new_event(n)) for n in range(3)]
    await sender.wait_calls(1)  # no flush(): the linger time ran out
    assert sender.sent_ids() == [ids]
    await logger.close()
    assert logger.delivered == 3


@pytest.mark.asyncio
async def test_batches_are_cut_by_bytes_too() -> None:
    sender = ScriptedSender()
    events = [new_event(n) for n in range(7)]
    for event in events:  # as log() would fill them in, so that the sizes are final
        event.id = new_event_id()
        event.occur_time.GetCurrentTime()
    size = max(event.ByteSize() for event in events)
    logger = BatchingLogger(sender, max_batch=100, max_delay_s=3600, max_batch_bytes=3 * size)
    for event in events:
        logger.log(event)
    await flush(logger)
    assert [len(call) for call in sender.calls] == [3, 3, 1]


@pytest.mark.asyncio
async def test_log_is_synchronous_fills_in_id_and_time_and_sends_a_copy() -> None:
    assert not inspect.iscoroutinefunction(BatchingLogger.log)
    sender = ScriptedSender()
    logger = BatchingLogger(sender, max_delay_s=3600)
    event = new_event(1)
    event_id = logger.log(event)
    assert event.id == event_id
    assert uuid.UUID(event_id).version == 7
    assert event.HasField("occur_time")
    sent_copy = Event()
    sent_copy.CopyFrom(event)
    event.tenant_user_id = "changed after log()"
    given = new_event(2)
    given.id = "my-own-id"
    assert logger.log(given) == "my-own-id"
    await flush(logger)
    assert sender.calls[0][0] == sent_copy
    assert sender.sent_ids() == [[event_id, "my-own-id"]]


# ---- queue bound -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_full_queue_drops_at_once_and_reports_each_dropped_event() -> None:
    sender = ScriptedSender()
    sender.gates[0] = asyncio.Event()
    reports = Reports()
    logger = BatchingLogger(
        sender, max_batch=2, max_delay_s=3600, max_queue=3, on_undelivered=reports
    )
    in_flight = [logger.log(new_event(n)) for n in range(2)]
    await sender.wait_calls(1)  # the first batch is held by the server stand-in
    queued: list[str] = []
    dropped: list[str] = []
    for n in range(2, 7):
        before = len(reports.items)
        event_id = logger.log(new_event(n))
        assert logger.queued <= logger.max_queue
        # A drop is reported inside the log() call itself.
        (dropped if len(reports.items) > before else queued).append(event_id)
    assert len(queued) == 3
    assert logger.queued == 3
    assert reports.ids() == dropped
    assert len(dropped) == 2
    for _, failure in reports.items:
        assert failure.reason == QUEUE_FULL
        assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (failure.attempts, failure.maybe_stored) == (0, False)
    assert logger.dropped_queue_full == 2
    assert logger.undelivered == 0

    sender.gates[0].set()
    await flush(logger)
    sent = [i for call in sender.sent_ids() for i in call]
    assert sent == in_flight + queued  # dropped events are never sent
    assert logger.delivered == 5
    assert balanced(logger)


@pytest.mark.asyncio
async def test_a_raising_callback_does_not_reach_the_caller() -> None:
    def broken(event: Event, failure: DeliveryFailure) -> None:
        raise RuntimeError("callback bug")

    sender = ScriptedSender()
    sender.gates[0] = asyncio.Event()
    logger = BatchingLogger(
        sender, max_batch=1, max_delay_s=3600, max_queue=1, on_undelivered=broken
    )
    logger.log(new_event(0))
    await sender.wait_calls(1)
    logger.log(new_event(1))
    logger.log(new_event(2))  # dropped; the callback raises inside log()
    assert logger.dropped_queue_full == 1
    sender.gates[0].set()
    await flush(logger)
    assert balanced(logger)


# ---- retries ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_failed_calls_are_retried_with_the_same_ids() -> None:
    failures = [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]

    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        if index < len(failures):
            raise call_error(failures[index])
        return stored(events, already=True)  # an earlier attempt had been stored after all

    sender = ScriptedSender(respond)
    reports = Reports()
    logger = BatchingLogger(
        sender, max_delay_s=3600, initial_backoff_s=0.001, on_undelivered=reports
    )
    ids = [logger.log(new_event(n)) for n in range(5)]
    await flush(logger)
    assert sender.sent_ids() == [ids] * 4
    assert logger.retried_batches == 3
    assert logger.delivered == 5  # already_stored counts as delivered
    assert reports.items == []
    assert balanced(logger)


@pytest.mark.asyncio
async def test_per_event_transient_errors_retry_only_those_events() -> None:
    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        if index == 0:
            return service_pb2.LogEventsResponse(
                results=[
                    Result(event=events[0]),
                    event_error(
                        grpc.StatusCode.UNAVAILABLE, enums_pb2.ERROR_REASON_DATABASE_UNAVAILABLE
                    ),
                    Result(event=events[2]),
                    event_error(
                        grpc.StatusCode.ABORTED, enums_pb2.ERROR_REASON_SEQUENCE_CONTENTION
                    ),
                ]
            )
        return stored(events)

    sender = ScriptedSender(respond)
    logger = BatchingLogger(sender, max_delay_s=3600, initial_backoff_s=0.001)
    ids = [logger.log(new_event(n)) for n in range(4)]
    await flush(logger)
    assert sender.sent_ids() == [ids, [ids[1], ids[3]]]
    assert (logger.delivered, logger.undelivered, logger.retried_batches) == (4, 0, 1)


@pytest.mark.asyncio
async def test_rejected_events_are_reported_with_their_error_and_not_retried() -> None:
    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        return service_pb2.LogEventsResponse(
            results=[
                Result(event=events[0]),
                event_error(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    enums_pb2.ERROR_REASON_INVALID_ARGUMENT,
                    [("events[1].start_call.call_id", "required")],
                ),
                event_error(grpc.StatusCode.ALREADY_EXISTS, enums_pb2.ERROR_REASON_ID_CONFLICT),
            ]
        )

    sender = ScriptedSender(respond)
    reports = Reports()
    logger = BatchingLogger(sender, max_delay_s=3600, on_undelivered=reports)
    ids = [logger.log(new_event(n)) for n in range(3)]
    await flush(logger)
    assert len(sender.calls) == 1
    assert reports.ids() == ids[1:]
    invalid, conflict = (failure for _, failure in reports.items)
    assert invalid == DeliveryFailure(
        code=grpc.StatusCode.INVALID_ARGUMENT,
        reason="ERROR_REASON_INVALID_ARGUMENT",
        message="INVALID_ARGUMENT for this event",
        field_violations=(("events[1].start_call.call_id", "required"),),
        attempts=1,
        maybe_stored=False,
    )
    assert (conflict.code, conflict.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ERROR_REASON_ID_CONFLICT",
    )
    assert not conflict.maybe_stored
    assert (logger.delivered, logger.undelivered) == (1, 2)
    assert balanced(logger)


@pytest.mark.asyncio
async def test_past_the_retry_budget_every_event_is_reported_as_maybe_stored() -> None:
    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        raise call_error(grpc.StatusCode.UNAVAILABLE)

    sender = ScriptedSender(respond)
    reports = Reports()
    logger = BatchingLogger(
        sender,
        max_delay_s=3600,
        retry_budget_s=0.1,
        initial_backoff_s=0.005,
        max_backoff_s=0.02,
        on_undelivered=reports,
    )
    ids = [logger.log(new_event(n)) for n in range(4)]
    await flush(logger)
    assert len(sender.calls) >= 2
    assert all(call == ids for call in sender.sent_ids())
    assert logger.retried_batches == len(sender.calls) - 1
    assert reports.ids() == ids
    for _, failure in reports.items:
        assert failure.code == grpc.StatusCode.UNAVAILABLE
        assert failure.attempts == len(sender.calls)
        assert failure.maybe_stored  # a failed call may have been stored before it broke
        assert "retry budget" in failure.message
    assert (logger.delivered, logger.undelivered) == (0, 4)
    assert balanced(logger)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "maybe_stored"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, False),  # rejected before anything was written
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.INTERNAL, True),  # broke somewhere: the write may have happened
    ],
)
async def test_a_call_failing_for_good_reports_the_batch_once(
    code: grpc.StatusCode, maybe_stored: bool
) -> None:
    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        raise call_error(code, "ERROR_REASON_SOMETHING")

    sender = ScriptedSender(respond)
    reports = Reports()
    logger = BatchingLogger(sender, max_delay_s=3600, on_undelivered=reports)
    ids = [logger.log(new_event(n)) for n in range(3)]
    await flush(logger)
    assert len(sender.calls) == 1
    assert reports.ids() == ids
    for _, failure in reports.items:
        assert (failure.code, failure.reason) == (code, "ERROR_REASON_SOMETHING")
        assert failure.maybe_stored == maybe_stored
    assert balanced(logger)


@pytest.mark.asyncio
async def test_a_batch_the_service_finds_too_large_is_halved() -> None:
    async def respond(index: int, events: list[Event]) -> service_pb2.LogEventsResponse:
        if len(events) > 4:
            raise call_error(grpc.StatusCode.INVALID_ARGUMENT, "ERROR_REASON_BATCH_TOO_LARGE")
        return stored(events)

    sender = ScriptedSender(respond)
    logger = BatchingLogger(sender, max_batch=10, max_delay_s=3600)
    ids = [logger.log(new_event(n)) for n in range(10)]
    await flush(logger)
    accepted = [call for call in sender.sent_ids() if len(call) <= 4]
    assert [i for call in accepted for i in call] == ids  # each once, in log order
    assert logger.delivered == 10
    # Later batches use the smaller size straight away: none is refused again.
    more = [logger.log(new_event(n)) for n in range(10)]
    calls_before = len(sender.calls)
    await flush(logger)
    later = sender.sent_ids()[calls_before:]
    assert all(len(call) <= 4 for call in later)
    assert [i for call in later for i in call] == more


# ---- flush and close -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_flush_sends_at_once_and_returns_when_all_is_settled() -> None:
    sender = ScriptedSender()
    logger = BatchingLogger(sender, max_delay_s=3600)
    await flush(logger)  # nothing logged: returns at once
    for n in range(3):
        logger.log(new_event(n))
    await flush(logger)  # without flush() these would wait an hour
    assert logger.delivered == 3
    assert balanced(logger)


@pytest.mark.asyncio
async def test_flush_waits_for_events_logged_before_it_and_not_for_later_ones() -> None:
    sender = ScriptedSender()
    sender.gates = {0: asyncio.Event(), 1: asyncio.Event()}
    logger = BatchingLogger(sender, max_batch=1, max_delay_s=3600)
    first = logger.log(new_event(0))
    await sender.wait_calls(1)
    delivered_when_flushed: list[int] = []
    flushing = logger.flush()  # waits for what was logged so far, i.e. the first event
    flushing.add_done_callback(lambda _: delivered_when_flushed.append(logger.delivered))
    second = logger.log(new_event(1))
    sender.gates[0].set()
    async with asyncio.timeout(DEADLINE_S):
        await flushing
    await sender.wait_calls(2)
    # flush() returned once the first event was delivered, while the second was still held.
    assert delivered_when_flushed == [1]
    assert sender.sent_ids() == [[first], [second]]
    sender.gates[1].set()
    await flush(logger)
    assert logger.delivered == 2


@pytest.mark.asyncio
async def test_async_with_flushes_on_exit_and_later_events_are_reported() -> None:
    sender = ScriptedSender()
    reports = Reports()
    async with BatchingLogger(sender, max_delay_s=3600, on_undelivered=reports) as logger:
        for n in range(5):
            logger.log(new_event(n))
    assert logger.delivered == 5
    late = logger.log(new_event(5))
    assert reports.ids() == [late]
    assert reports.items[0][1].reason == LOGGER_CLOSED
    assert not reports.items[0][1].maybe_stored
    assert (logger.undelivered, logger.logged) == (1, 6)
    assert balanced(logger)


@pytest.mark.asyncio
async def test_close_with_a_timeout_reports_what_is_still_pending() -> None:
    sender = ScriptedSender()
    sender.gates[0] = asyncio.Event()  # the service never answers
    reports = Reports()
    logger = BatchingLogger(sender, max_batch=2, max_delay_s=3600, on_undelivered=reports)
    ids = [logger.log(new_event(n)) for n in range(3)]
    await sender.wait_calls(1)
    await logger.close(timeout_s=0.05)
    assert reports.ids() == ids
    sent, unsent = reports.items[:2], reports.items[2:]
    for _, failure in sent:
        assert (failure.reason, failure.code) == (LOGGER_CLOSED, grpc.StatusCode.CANCELLED)
        assert failure.maybe_stored
        assert failure.attempts == 1
    for _, failure in unsent:
        assert failure.reason == LOGGER_CLOSED
        assert not failure.maybe_stored
        assert failure.attempts == 0
    assert (logger.delivered, logger.undelivered) == (0, 3)
    assert balanced(logger)
