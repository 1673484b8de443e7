"""BatchingLogger: fire-and-forget audit logging in batches, with retries and exact failure reports.

Delivery contract, per event passed to ``log()``:

- it is **delivered** when the service acknowledged it (a LogEvents result with the stored event,
  ``already_stored`` included: a retry found the first attempt's write). Only then does it count
  in ``delivered`` (and reach ``on_delivered``). The service acknowledges only after the
  database did, so a delivered event is stored.
- otherwise it is **reported**, exactly once, to ``on_undelivered(event, failure)`` and counted in
  ``dropped_queue_full`` (the queue was full when it was logged; never sent) or ``undelivered``
  (rejected by the service, retry budget exhausted, or logged after/stopped by ``close()``).
- so at every quiet point (after ``flush()``/``close()``):
  ``delivered + undelivered + dropped_queue_full == logged``.

``failure.maybe_stored`` tells the one ambiguous case apart: an attempt to send the event ended
without a definite answer (connection lost, deadline exceeded, the database unreachable from the
service) and no later attempt got one. Such an event may have been stored even though it was
never acknowledged; logging the same event again (same id, same content) is safe: the service
deduplicates it. Every other reported event (``maybe_stored`` false) was definitely not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import grpc

from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2

from .client import AuditLogError
from .events import now_timestamp
from .ids import new_event_id

__all__ = [
    "LOGGER_CLOSED",
    "QUEUE_FULL",
    "RETRYABLE_CODES",
    "BatchSender",
    "BatchingLogger",
    "DeliveryFailure",
]

AuditEvent = audit_event_pb2.AuditEvent
log = logging.getLogger(__name__)

# Failures after which the same batch (same ids) is sent again: the service was unreachable,
# overloaded, too slow, or lost a race for a session's sequence slots. Each is also reported by
# the service per event inside a LogEvents response (a database outage is UNAVAILABLE there).
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
# Whole-call failures that the service answers before writing anything.
_REJECTED_BEFORE_WRITE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
_CODES = {code.value[0]: code for code in grpc.StatusCode}

QUEUE_FULL = "QUEUE_FULL"
"""DeliveryFailure.reason of an event dropped by log() because the queue was full."""
LOGGER_CLOSED = "LOGGER_CLOSED"
"""DeliveryFailure.reason of an event logged after close(), or still pending when it was stopped."""
_BATCH_TOO_LARGE = enums_pb2.ErrorReason.Name(enums_pb2.ERROR_REASON_BATCH_TOO_LARGE)


@dataclass(frozen=True)
class DeliveryFailure:
    """Why an event was not delivered.

    `reason` is the service's ErrorReason name (e.g. "ERROR_REASON_INVALID_ARGUMENT"), or the
    logger's own QUEUE_FULL / LOGGER_CLOSED, or empty when the call failed without reaching the
    service. `attempts` counts how often the event was sent (0: never). `maybe_stored`: see the
    module docstring; when true, the event may be in the database although it was not
    acknowledged.
    """

    code: grpc.StatusCode
    reason: str
    message: str
    field_violations: tuple[tuple[str, str], ...] = ()
    attempts: int = 0
    maybe_stored: bool = False


class BatchSender(Protocol):
    """What BatchingLogger needs of AuditLogClient: LogEvents with a deadline."""

    async def log_events(
        self,
        events: Sequence[AuditEvent],
        *,
        timeout_s: float | None = None,
        acks_only: bool = False,
    ) -> service_pb2.LogEventsResponse: ...


UndeliveredCallback = Callable[[AuditEvent, DeliveryFailure], None]
DeliveredCallback = Callable[[AuditEvent], None]


@dataclass(eq=False, slots=True)
class _Queued:
    event: AuditEvent
    index: int  # position among the accepted events, from 0
    enqueued_at: float  # time.monotonic() when logged
    attempts: int = 0
    maybe_stored: bool = False
    settled: bool = False
    last_failure: DeliveryFailure | None = None


def _failure_of_call(error: AuditLogError) -> DeliveryFailure:
    return DeliveryFailure(
        code=error.code,
        reason=error.reason,
        message=error.message,
        field_violations=tuple(error.field_violations),
    )


def _failure_of_result(error: service_pb2.EventError) -> DeliveryFailure:
    return DeliveryFailure(
        code=_CODES.get(error.code, grpc.StatusCode.UNKNOWN),
        reason=enums_pb2.ErrorReason.Name(error.reason),
        message=error.message,
        field_violations=tuple((v.field, v.description) for v in error.field_violations),
    )


class BatchingLogger:
    """Logs events in the background, in batches, without ever making the caller wait.

    ``log(event)`` is a plain (synchronous) method: it puts the event into a bounded queue and
    returns at once. A background task sends the queue with LogEvents in batches of up to
    `max_batch` events (and `max_batch_bytes`), as soon as a batch is full or the oldest queued
    event has waited `max_delay_s`. A batch that fails with UNAVAILABLE, DEADLINE_EXCEEDED,
    RESOURCE_EXHAUSTED or ABORTED (as a whole, or per event) is sent again with the same event
    ids, with exponential backoff, until it is delivered or `retry_budget_s` has passed since
    its first attempt. What is not delivered is reported (see the module docstring), never
    dropped silently. Batches go out one at a time, in log order, so a co-browsing session's
    events get their sequence numbers in the order they were logged (unless a retry reorders
    events within one failed batch).

    >>> async with AuditLogClient("127.0.0.1:50051") as client:
    ...     async with BatchingLogger(client, on_undelivered=report) as logger:
    ...         logger.log(general_event("acme", "agent-7", LoggedInAttributes()))
    ...         ...  # the block's end flushes: every event is delivered or reported

    The logger is bound to the event loop it runs on: call log() from that loop's thread (from
    another thread, ``loop.call_soon_threadsafe(logger.log, event)``). Callbacks run on the loop
    and must not block; an exception in one is logged, not raised.

    Memory stays bounded: at most `max_queue` events wait in the queue, plus one batch in
    flight. When the queue is full, log() reports the event as dropped (reason QUEUE_FULL) in
    the same call, before it returns.
    """

    def __init__(
        self,
        client: BatchSender,
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.05,
        max_queue: int = 10_000,
        max_batch_bytes: int = 3_000_000,
        retry_budget_s: float = 30.0,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        rpc_timeout_s: float | None = None,
        on_undelivered: UndeliveredCallback | None = None,
        on_delivered: DeliveredCallback | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch, max_queue and max_batch_bytes must be positive")
        self._client = client
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._max_queue = max_queue
        self._max_batch_bytes = max_batch_bytes
        self._retry_budget_s = retry_budget_s
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rpc_timeout_s = rpc_timeout_s
        self._on_undelivered = on_undelivered
        self._on_delivered = on_delivered

        self._queue: deque[_Queued] = deque()
        self._in_flight: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._accepted = 0  # events put into the queue
        self._completed = 0  # accepted events settled, in order: every index below is settled
        self._flush_through = 0  # events below this index are sent without lingering
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

        self._logged = 0
        self._delivered = 0
        self._undelivered = 0
        self._dropped_queue_full = 0
        self._retried_batches = 0

    # ---- counters ----------------------------------------------------------------------------

    @property
    def logged(self) -> int:
        """Events passed to log()."""
        return self._logged

    @property
    def delivered(self) -> int:
        """Events the service acknowledged as stored."""
        return self._delivered

    @property
    def undelivered(self) -> int:
        """Events reported to on_undelivered after being accepted (or logged after close())."""
        return self._undelivered

    @property
    def dropped_queue_full(self) -> int:
        """Events log() reported as dropped because the queue was full."""
        return self._dropped_queue_full

    @property
    def retried_batches(self) -> int:
        """How often a batch (or its retryable part) was sent again."""
        return self._retried_batches

    @property
    def max_queue(self) -> int:
        """The queue bound."""
        return self._max_queue

    @property
    def queued(self) -> int:
        """Events waiting in the queue (at most max_queue), not counting the batch in flight."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Events logged and neither delivered nor reported yet."""
        return len(self._queue) + sum(1 for item in self._in_flight if not item.settled)

    # ---- the caller's side -------------------------------------------------------------------

    def log(self, event: AuditEvent) -> str:
        """Queue an event for delivery and return its id, without waiting for anything.

        An empty id is filled in with a new UUIDv7 and an unset occur_time with the current
        time, in `event` itself (so logging the same message again is an idempotent retry);
        the logger sends a copy, so the caller may reuse `event` afterwards. When the queue is
        full, or the logger is closed, the event is reported to on_undelivered before this
        returns. Never raises for a full queue or an unreachable service.

        >>> event_id = logger.log(cobrowse_event("acme", "cob-1", "agent", ScrollAttributes()))
        """
        if not event.id:
            event.id = new_event_id()
        if not event.HasField("occur_time"):
            event.occur_time.CopyFrom(now_timestamp())
        self._logged += 1
        snapshot = AuditEvent()
        snapshot.CopyFrom(event)
        if self._closed:
            self._undelivered += 1
            self._report(
                snapshot,
                DeliveryFailure(
                    grpc.StatusCode.FAILED_PRECONDITION, LOGGER_CLOSED, "the logger is closed"
                ),
            )
        elif len(self._queue) >= self._max_queue:
            self._dropped_queue_full += 1
            self._report(
                snapshot,
                DeliveryFailure(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    QUEUE_FULL,
                    f"the queue holds {self._max_queue} events waiting for delivery",
                ),
            )
        else:
            self._queue.append(_Queued(snapshot, self._accepted, time.monotonic()))
            self._accepted += 1
            if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                self._wakeup.set()
            if self._task is None or self._task.done():
                self._start()
        return snapshot.id

    def flush(self) -> asyncio.Future[None]:
        """Await it to wait until every event logged before this call is delivered or reported.

        The set of events waited for is fixed when flush() is called, not when it is awaited:
        events logged afterwards are not waited for. Queued events are sent at once, without
        waiting for max_delay_s. During an outage this can take up to about the retry budget
        (plus one call's deadline) per batch.

        >>> logger.log(event)
        >>> await logger.flush()
        >>> logger.delivered + logger.undelivered + logger.dropped_queue_full == logger.logged
        True
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        target = self._accepted
        if self._completed >= target:
            waiter.set_result(None)
            return waiter
        self._flush_through = max(self._flush_through, target)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._start()
        self._waiters.append((target, waiter))
        return waiter

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the background task; log() reports later events as LOGGER_CLOSED.

        With a `timeout_s`, sending stops after that many seconds and what is still pending is
        reported (reason LOGGER_CLOSED; `maybe_stored` when it had been sent). The same happens
        when close() itself is cancelled.
        """
        self._closed = True
        self._wakeup.set()
        if self._queue and (self._task is None or self._task.done()):
            self._start()
        task = self._task
        if task is None:
            return
        if timeout_s is None:
            await task
            return
        # On timeout wait_for cancels the task, which reports everything still pending.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, timeout_s)

    async def __aenter__(self) -> BatchingLogger:
        if self._task is None:
            self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- the background side -----------------------------------------------------------------

    def _start(self) -> None:
        if self._closed and not self._queue:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first log() or `async with` on a loop starts it
        self._task = loop.create_task(self._run(), name="auditlog-batching-logger")

    async def _run(self) -> None:
        try:
            while (batch := await self._next_batch()) is not None:
                self._in_flight = batch
                try:
                    await self._deliver(batch, time.monotonic())
                except Exception as exc:  # a bug must not lose events silently
                    log.exception("BatchingLogger: delivering a batch failed")
                    self._mark_sent_as_maybe_stored(batch)
                    self._settle_unsettled(
                        batch,
                        DeliveryFailure(grpc.StatusCode.UNKNOWN, "", f"delivery failed: {exc!r}"),
                    )
                self._in_flight = []
                self._advance(batch[-1].index + 1)
        finally:
            # Cancelled (close() timed out or was cancelled, or the loop is shutting down).
            stopped = DeliveryFailure(
                grpc.StatusCode.CANCELLED,
                LOGGER_CLOSED,
                "the logger was stopped before the event was delivered",
            )
            self._mark_sent_as_maybe_stored(self._in_flight)
            self._settle_unsettled(self._in_flight, stopped)
            self._in_flight = []
            rest = list(self._queue)
            self._queue.clear()
            self._settle_unsettled(rest, stopped)
            self._advance(self._accepted)

    async def _next_batch(self) -> list[_Queued] | None:
        while not self._queue:
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        # Linger for more events, unless the batch is full, a flush wants it, or we are closing.
        while (
            len(self._queue) < self._max_batch
            and not self._closed
            and self._queue[0].index >= self._flush_through
        ):
            remaining = self._queue[0].enqueued_at + self._max_delay_s - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        batch: list[_Queued] = []
        size = 0
        while self._queue and len(batch) < self._max_batch:
            item_size = self._queue[0].event.ByteSize()
            if batch and size + item_size > self._max_batch_bytes:
                break
            batch.append(self._queue.popleft())
            size += item_size
        return batch

    async def _deliver(self, todo: list[_Queued], started: float) -> None:
        """Send `todo` until each event is delivered or reported; `started`: the first attempt."""
        backoff = self._initial_backoff_s
        while todo:
            for item in todo:
                item.attempts += 1
            retry: list[_Queued] = []
            wait_at_least = 0.0
            try:
                response = await self._client.log_events(
                    [item.event for item in todo], timeout_s=self._rpc_timeout_s, acks_only=True
                )
            except (AuditLogError, grpc.aio.AioRpcError) as exc:
                error = exc if isinstance(exc, AuditLogError) else AuditLogError(exc)
                failure = _failure_of_call(error)
                if error.reason == _BATCH_TOO_LARGE and len(todo) > 1:
                    # The service takes smaller batches than we were told: halve and go on.
                    half = len(todo) // 2
                    self._max_batch = max(1, min(self._max_batch, half))
                    await self._deliver(todo[:half], started)
                    await self._deliver(todo[half:], started)
                    return
                if error.code not in _REJECTED_BEFORE_WRITE:
                    for item in todo:
                        item.maybe_stored = True
                if error.code not in RETRYABLE_CODES:
                    self._settle_unsettled(todo, failure)
                    return
                for item in todo:
                    item.last_failure = failure
                retry = todo
                # A tenant over its rate limit is told when to come back: not sooner.
                wait_at_least = max(wait_at_least, error.retry_delay_s or 0.0)
            else:
                results = response.results
                if len(results) != len(todo):
                    for item in todo:
                        item.maybe_stored = True
                    self._settle_unsettled(
                        todo,
                        DeliveryFailure(
                            grpc.StatusCode.INTERNAL,
                            "",
                            f"the service answered {len(results)} results for {len(todo)} events",
                        ),
                    )
                    return
                for item, result in zip(todo, results, strict=True):
                    outcome = result.WhichOneof("result")
                    if outcome in ("event", "ack"):
                        self._deliver_one(item)
                        continue
                    failure = (
                        _failure_of_result(result.error)
                        if outcome == "error"
                        else DeliveryFailure(grpc.StatusCode.UNKNOWN, "", "empty result")
                    )
                    if failure.code in RETRYABLE_CODES:
                        item.maybe_stored = True
                        item.last_failure = failure
                        retry.append(item)
                        if result.error.HasField("retry_delay"):
                            delay_s = result.error.retry_delay.ToTimedelta().total_seconds()
                            wait_at_least = max(wait_at_least, delay_s)
                    else:
                        self._settle_unsettled([item], failure)
            if not retry:
                return
            # Jitter, so producers do not retry in step; never sooner than the service asked.
            delay = max(backoff * random.uniform(0.5, 1.0), wait_at_least)
            if time.monotonic() + delay - started > self._retry_budget_s:
                for item in retry:
                    last = item.last_failure or DeliveryFailure(grpc.StatusCode.UNKNOWN, "", "")
                    self._settle_unsettled(
                        [item],
                        dataclasses.replace(
                            last,
                            message=f"retry budget of {self._retry_budget_s:g}s exhausted "
                            f"after {item.attempts} attempts; last error: {last.message}",
                        ),
                    )
                return
            self._retried_batches += 1
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self._max_backoff_s)
            todo = retry

    @staticmethod
    def _mark_sent_as_maybe_stored(items: Sequence[_Queued]) -> None:
        # Interrupted mid-call: an event that was sent may have been stored.
        for item in items:
            if item.attempts and not item.settled:
                item.maybe_stored = True

    def _deliver_one(self, item: _Queued) -> None:
        item.settled = True
        self._delivered += 1
        if self._on_delivered is not None:
            try:
                self._on_delivered(item.event)
            except Exception:
                log.exception("BatchingLogger: on_delivered raised")

    def _settle_unsettled(self, items: Sequence[_Queued], failure: DeliveryFailure) -> None:
        for item in items:
            if item.settled:
                continue
            item.settled = True
            self._undelivered += 1
            self._report(
                item.event,
                dataclasses.replace(
                    failure, attempts=item.attempts, maybe_stored=item.maybe_stored
                ),
            )

    def _report(self, event: AuditEvent, failure: DeliveryFailure) -> None:
        if self._on_undelivered is None:
            log.warning(
                "audit event %s not delivered: %s %s %s",
                event.id,
                failure.code.name,
                failure.reason,
                failure.message,
            )
            return
        try:
            self._on_undelivered(event, failure)
        except Exception:
            log.exception("BatchingLogger: on_undelivered raised")

    def _advance(self, completed: int) -> None:
        self._completed = max(self._completed, completed)
        still_waiting = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= self._completed:
                waiter.set_result(None)
            else:
                still_waiting.append((target, waiter))
        self._waiters = still_waiting
