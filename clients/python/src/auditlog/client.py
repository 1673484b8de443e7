"""AuditLogClient: an async client over the generated stubs, with ids filled in for idempotency."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

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
