"""AuditLogClient: an async client over the generated stubs, with ids filled in for idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog.v1 import (
    audit_event_pb2,
    enums_pb2,
    options_pb2,
    service_pb2,
    service_pb2_grpc,
)

AuditEvent = audit_event_pb2.AuditEvent

# Retries of UNAVAILABLE are safe for every method: writes carry a client-chosen id.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "auditlog.v1.AuditLogService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def event_type_info(event_type: int) -> options_pb2.EventTypeInfo:
    """The seed type string, display name and category of an EventType value."""
    value = enums_pb2.EventType.DESCRIPTOR.values_by_number[event_type]
    return value.GetOptions().Extensions[options_pb2.event_type_info]


def new_event_id() -> str:
    """A fresh idempotency key; a retry of the same event must reuse it."""
    return str(uuid.uuid4())


class AuditLogError(Exception):
    """An RPC failure with the service's stable reason and the offending fields, if any."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.code = error.code()
        self.message = error.details() or ""
        self.reason = ""
        self.field_violations: list[tuple[str, str]] = []
        self.metadata: dict[str, str] = {}
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status is not None else []:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif detail.Unpack(bad):
                self.field_violations = [(v.field, v.description) for v in bad.field_violations]
        super().__init__(f"{self.code.name}: {self.message}")


class AuditLogClient:
    """Async client of AuditLogService.

    >>> async with AuditLogClient("127.0.0.1:50051") as client:
    ...     stored = await client.log_event(event)
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        options = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self.stub = service_pb2_grpc.AuditLogServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> AuditLogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def log_event(self, event: AuditEvent) -> service_pb2.LogEventResponse:
        """Store one event (an id is filled in when empty, so retries are idempotent)."""
        if not event.id:
            event.id = new_event_id()
        try:
            response: service_pb2.LogEventResponse = await self.stub.LogEvent(
                service_pb2.LogEventRequest(event=event), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error
        return response

    async def log_events(self, events: Sequence[AuditEvent]) -> service_pb2.LogEventsResponse:
        """Store a batch; one result per event."""
        for event in events:
            if not event.id:
                event.id = new_event_id()
        try:
            response: service_pb2.LogEventsResponse = await self.stub.LogEvents(
                service_pb2.LogEventsRequest(events=events), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error
        return response

    async def get_event(self, tenant_id: str, event_id: str) -> AuditEvent:
        try:
            response: service_pb2.GetEventResponse = await self.stub.GetEvent(
                service_pb2.GetEventRequest(tenant_id=tenant_id, id=event_id),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error
        return response.event

    async def list_page(
        self, request: service_pb2.ListEventsRequest
    ) -> service_pb2.ListEventsResponse:
        try:
            response: service_pb2.ListEventsResponse = await self.stub.ListEvents(
                request, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error
        return response

    def tail_session(
        self,
        tenant_id: str,
        session_id: str,
        *,
        cursor: str = "",
        from_now: bool = False,
        event_types: Sequence[int] = (),
        max_retries: int = 10,
    ) -> SessionTail:
        """Follow a co-browsing session: replay from the start (or a cursor, or now), then live."""
        request = service_pb2.TailSessionRequest(
            tenant_id=tenant_id,
            session_id=session_id,
            event_types=event_types,  # type: ignore[arg-type]
        )
        if cursor:
            request.cursor = cursor
        elif from_now:
            request.from_now = True
        else:
            request.from_beginning = True
        return SessionTail(self, request, max_retries=max_retries)

    async def list_events(
        self,
        tenant_id: str,
        *,
        filter: service_pb2.EventFilter | None = None,
        oldest_first: bool = False,
        page_size: int = 200,
        limit: int | None = None,
    ) -> AsyncIterator[AuditEvent]:
        """Every matching event, page after page (at most `limit`)."""
        request = service_pb2.ListEventsRequest(
            tenant_id=tenant_id,
            filter=filter,
            page_size=page_size,
            order=(
                enums_pb2.SORT_ORDER_OLDEST_FIRST
                if oldest_first
                else enums_pb2.SORT_ORDER_NEWEST_FIRST
            ),
        )
        yielded = 0
        while True:
            page = await self.list_page(request)
            for event in page.events:
                if limit is not None and yielded >= limit:
                    return
                yield event
                yielded += 1
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


# Trailing metadata key under which the server sends the cursor a tail resumes from.
CURSOR_TRAILER = "auditlog-cursor"
# Statuses after which a tail resumes by itself: the server went away, shut down, or dropped a
# client that did not keep up. Anything else (a bad cursor, say) is the caller's to handle.
_RESUMABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    # grpc-stubs types metadata entries as an opaque class; at run time they are (key, value).
    entries: Any = error.trailing_metadata() or ()
    for name, value in entries:
        if name == key and isinstance(value, str):
            return value
    return ""


class SessionTail:
    """An async iterator over a co-browsing session's events, replayed and then live.

    It resumes by itself from the last cursor when the stream breaks (server restart, failover,
    shutdown), with exponential backoff and at most `max_retries` failures in a row, and never
    yields an event twice (it also skips any sequence at or below the last one yielded).

    >>> tail = client.tail_session("acme", "cob-1")
    >>> async for event in tail:
    ...     print(event.sequence, tail.caught_up.is_set())
    """

    def __init__(
        self,
        client: AuditLogClient,
        request: service_pb2.TailSessionRequest,
        *,
        max_retries: int = 10,
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        self._client = client
        self._request = request
        self.max_retries = max_retries
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self.cursor: str = request.cursor if request.WhichOneof("start") == "cursor" else ""
        self.last_sequence = 0
        self.head = 0
        self.resumes = 0
        self.caught_up = asyncio.Event()
        self.heartbeats = 0

    def __aiter__(self) -> AsyncIterator[AuditEvent]:
        return self._events()

    def _next_request(self) -> service_pb2.TailSessionRequest:
        request = service_pb2.TailSessionRequest()
        request.CopyFrom(self._request)
        if self.cursor:
            request.cursor = self.cursor
        return request

    async def _events(self) -> AsyncIterator[AuditEvent]:
        failures = 0
        backoff = self._initial_backoff_s
        while True:
            call = self._client.stub.TailSession(self._next_request())
            try:
                async for response in call:
                    failures, backoff = 0, self._initial_backoff_s
                    kind = response.WhichOneof("kind")
                    if kind == "events":
                        for event in response.events.events:
                            if event.sequence > self.last_sequence:
                                self.last_sequence = event.sequence
                                self.head = max(self.head, event.sequence)
                                yield event
                    elif kind == "caught_up":
                        self.head = response.caught_up.head_sequence
                        self.caught_up.set()
                    elif kind == "heartbeat":
                        self.head = response.heartbeat.head_sequence
                        self.heartbeats += 1
                    self.cursor = response.cursor
                return  # the server ended the stream normally
            except grpc.aio.AioRpcError as error:
                resume_from = _trailer(error, CURSOR_TRAILER)
                if resume_from:
                    self.cursor = resume_from
                if error.code() not in _RESUMABLE or failures >= self.max_retries:
                    raise AuditLogError(error) from error
                failures += 1
                self.resumes += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
            finally:
                call.cancel()
