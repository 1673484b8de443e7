"""EventStream: events sent over one StreamEvents call in batches, one result per event back."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2

from .client import AuditLogError
from .ids import new_event_id

__all__ = ["MAX_STREAM_BATCH", "EventStream"]

AuditEvent = audit_event_pb2.AuditEvent
StreamEventResult = service_pb2.StreamEventResult

# The contract's batch limit: a request carries at most as many events as LogEvents takes.
MAX_STREAM_BATCH = 1000
# A default gRPC server refuses messages over 4 MiB and the refusal ends the whole stream, so a
# batch stops short of that (with room for framing); a single larger event still goes alone.
_MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024
_BATCH_TOO_LARGE = enums_pb2.ERROR_REASON_BATCH_TOO_LARGE
# What read() returns at the end of a stream (missing from grpc-stubs).
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


@dataclass
class _Request:
    """Events sent in one request: `first` numbers the first of them in the caller's order."""

    first: int
    events: list[AuditEvent]

    def message(self) -> service_pb2.StreamEventsRequest:
        # A lone event goes as `event`, the one-event message every server takes.
        if len(self.events) == 1:
            return service_pb2.StreamEventsRequest(event=self.events[0])
        return service_pb2.StreamEventsRequest(events=self.events)


async def _aiter(source: AsyncIterable[AuditEvent] | Iterable[AuditEvent]) -> AsyncIterator[Any]:
    if isinstance(source, AsyncIterable):
        async for event in source:
            yield event
    else:
        for event in source:
            yield event


class EventStream:
    """Sends events over one StreamEvents call and yields one StreamEventResult per event, in the
    order of the events (``result.WhichOneof("result")`` is "ack" or "error").

    Each request carries the events that are ready when it is sent: a lone event goes at once,
    and while earlier requests are unanswered the next ones grow, up to `max_batch` (at most
    the contract's 1,000) and about 4 MiB. At most
    `max_in_flight` events are sent but not yet yielded, so a slow reader slows the source and
    memory stays bounded. A server whose batch limit is below `max_batch` answers
    BATCH_TOO_LARGE for the whole request, storing none of it; the stream then resends those
    events in smaller requests and keeps the smaller size, so callers never see that error.
    Events refused that way may be stored after events sent behind them.

    Empty event ids are filled in (a UUIDv7, in the event itself), so sending an event again
    after a failure stores it once. A failed call raises AuditLogError: events without a result
    by then may or may not be stored.
    """

    def __init__(
        self,
        stub: Any,
        source: AsyncIterable[AuditEvent] | Iterable[AuditEvent],
        *,
        max_batch: int = MAX_STREAM_BATCH,
        max_in_flight: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._stub = stub
        self._source = source
        # The contract's limit is a ceiling: a larger request would only come back refused.
        self._max_batch = max(1, min(max_batch, MAX_STREAM_BATCH))
        self._max_in_flight = max(1, max_in_flight or 4 * self._max_batch)
        self._timeout_s = timeout_s
        # The largest request this server took or is believed to take.
        self._cap = self._max_batch
        self._changed = asyncio.Condition()
        self._ready: deque[AuditEvent] = deque()
        self._resend: deque[_Request] = deque()
        self._sent: deque[_Request] = deque()
        self._source_done = False
        self._numbered = 0
        # Events numbered and not yet yielded (sent, answered out of turn, or to be resent).
        self._in_flight = 0
        self._failure: BaseException | None = None

    def __aiter__(self) -> AsyncIterator[service_pb2.StreamEventResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[service_pb2.StreamEventResult]:
        call = self._stub.StreamEvents(timeout=self._timeout_s)
        tasks = [
            asyncio.create_task(self._pump(call), name="auditlog stream source"),
            asyncio.create_task(self._send(call), name="auditlog stream sender"),
        ]
        answered: dict[int, service_pb2.StreamEventResult] = {}
        next_out = 0
        try:
            while True:
                try:
                    response = await call.read()
                except grpc.aio.AioRpcError as error:
                    raise AuditLogError(error) from error
                except asyncio.CancelledError:
                    # The source or the sender failed and cancelled the call: theirs is the error.
                    if self._failure is not None:
                        raise self._failure from None
                    raise
                if response is _EOF:
                    break
                await self._answer(self._sent.popleft(), response, answered)
                released = 0
                while next_out in answered:
                    yield answered.pop(next_out)
                    next_out += 1
                    released += 1
                if released:
                    async with self._changed:
                        self._in_flight -= released
                        self._changed.notify_all()
            if self._failure is not None:
                raise self._failure
            if next_out < self._numbered:
                raise RuntimeError(
                    f"the server ended the stream with {self._numbered - next_out} events "
                    "unanswered"
                )
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()

    async def _answer(
        self,
        request: _Request,
        response: service_pb2.StreamEventsResponse,
        answered: dict[int, service_pb2.StreamEventResult],
    ) -> None:
        """Files the results of one request by event number, or queues its events again."""
        kind = response.WhichOneof("result")
        if (
            len(request.events) > 1
            and kind == "error"
            and response.error.reason == _BATCH_TOO_LARGE
        ):
            # None of it was taken: resend it in halves (or smaller, if the cap is already).
            async with self._changed:
                self._cap = max(1, min(self._cap, len(request.events) // 2))
                for start in range(0, len(request.events), self._cap):
                    events = request.events[start : start + self._cap]
                    self._resend.append(_Request(request.first + start, events))
                self._changed.notify_all()
            return
        if response.results:
            results = list(response.results)
        elif kind == "ack":
            results = [StreamEventResult(ack=response.ack)]
        else:
            # An error for the whole request is every one of its events' error.
            results = [StreamEventResult(error=response.error) for _ in request.events]
        for offset, result in enumerate(results):
            answered[request.first + offset] = result

    async def _pump(self, call: Any) -> None:
        """Moves events from the source to the ready queue, at most one batch ahead."""
        try:
            async for event in _aiter(self._source):
                if not event.id:
                    event.id = new_event_id()
                async with self._changed:
                    await self._changed.wait_for(lambda: len(self._ready) < self._max_batch)
                    self._ready.append(event)
                    self._changed.notify_all()
            async with self._changed:
                self._source_done = True
                self._changed.notify_all()
        except Exception as error:
            self._failure = error
            call.cancel()

    def _can_send(self) -> bool:
        if self._resend:
            return True
        if self._ready:
            return self._in_flight < self._max_in_flight
        # Half-close only once every event is answered: a refused batch must still be resent.
        return self._source_done and self._in_flight == 0

    def _take(self) -> _Request:
        """The next request from the ready events: all of them, up to the cap, window and bytes."""
        room = min(self._cap, self._max_in_flight - self._in_flight)
        events: list[AuditEvent] = []
        size = 0
        while self._ready and len(events) < room:
            size += self._ready[0].ByteSize()
            if events and size > _MAX_BATCH_BYTES:
                break
            events.append(self._ready.popleft())
        request = _Request(self._numbered, events)
        self._numbered += len(events)
        self._in_flight += len(events)
        return request

    async def _send(self, call: Any) -> None:
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(self._can_send)
                    if self._resend:
                        request = self._resend.popleft()
                    elif self._ready:
                        request = self._take()
                        self._changed.notify_all()  # the source may refill the queue
                    else:
                        break
                    self._sent.append(request)
                await call.write(request.message())
            await call.done_writing()
        except Exception as error:
            # A write into a call that already ended fails too; the call's own status says why.
            if not call.done():
                self._failure = error
                call.cancel()
