"""AuditLogClient: an async client over the generated stubs, with ids filled in for idempotency."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog.v1 import (
    audit_event_pb2,
    enums_pb2,
    options_pb2,
    service_pb2,
    service_pb2_grpc,
)

from .events import (
    ActorValue,
    EventTypeValue,
    TimeLike,
    cobrowse_event,
    event_filter,
    general_event,
)
from .ids import new_event_id
from .ledger import EVENTS_PER_MESSAGE, single_items

__all__ = [
    "CURSOR_TRAILER",
    "AuditLogClient",
    "AuditLogError",
    "SessionTail",
    "TokenSource",
    "bearer_interceptors",
    "event_type_info",
    "new_event_id",
]

AuditEvent = audit_event_pb2.AuditEvent
TokenSource = str | Callable[[], str]
"""A bearer token, or a function returning the current one (called for every RPC)."""

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
    """The seed type string, display name and category of an EventType value.

    >>> event_type_info(enums_pb2.EVENT_TYPE_START_CALL).display_name
    '[Call] Start'
    """
    value = enums_pb2.EventType.DESCRIPTOR.values_by_number[event_type]
    return value.GetOptions().Extensions[options_pb2.event_type_info]


class AuditLogError(Exception):
    """An RPC failure with the service's stable reason and the offending fields, if any.

    `code` is the grpc.StatusCode, `reason` the ErrorReason name from the status's ErrorInfo
    (e.g. "ERROR_REASON_DATABASE_UNAVAILABLE"; empty when the failure did not come from the
    service, e.g. a connection refused), `field_violations` (field path, why) pairs from its
    BadRequest, `metadata` the ErrorInfo's metadata.

    >>> try:
    ...     await client.get_event("acme", "no-such-id")
    ... except AuditLogError as error:
    ...     print(error.code, error.reason)
    StatusCode.NOT_FOUND ERROR_REASON_EVENT_NOT_FOUND
    """

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.code = error.code()
        self.message = error.details() or ""
        self.reason = ""
        self.field_violations: list[tuple[str, str]] = []
        self.metadata: dict[str, str] = {}
        # From a google.rpc.RetryInfo: how long the service asks us to wait before a retry.
        self.retry_delay_s: float | None = None
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status is not None else []:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                self.reason = info.reason
                self.metadata = dict(info.metadata)
            elif detail.Unpack(bad):
                self.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(retry):
                self.retry_delay_s = retry.retry_delay.ToTimedelta().total_seconds()
        super().__init__(f"{self.code.name}: {self.message}")


def _token_value(token: TokenSource) -> str:
    return token() if callable(token) else token


class _BearerCallCredentials(grpc.AuthMetadataPlugin):
    """Adds "authorization: Bearer <token>" to every call of a TLS channel."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            value = _token_value(self._token)
        except Exception as exc:  # the call fails with this error instead of hanging
            callback((), exc)
            return
        callback((("authorization", f"Bearer {value}"),), None)


if TYPE_CHECKING:  # generic only in grpc-stubs, not at run time
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class _BearerMetadata:
    """Adds the bearer token as plain call metadata, for insecure (dev) channels only.

    gRPC refuses call credentials on a channel without TLS, so they cannot be used there.
    """

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = f"Bearer {_token_value(self._token)}"
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


# One class per kind of call: grpc.aio files each interceptor under the first kind it is.
class _BearerUnaryUnary(_BearerMetadata, _UnaryUnary):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _BearerUnaryStream(_BearerMetadata, _UnaryStream):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _BearerStreamUnary(_BearerMetadata, _StreamUnary):
    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _BearerStreamStream(_BearerMetadata, _StreamStream):
    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def bearer_interceptors(token: TokenSource) -> list[Any]:
    """Client interceptors that add the bearer token to every call of an insecure channel
    (local development; a TLS channel uses call credentials instead)."""
    return [
        _BearerUnaryUnary(token),
        _BearerUnaryStream(token),
        _BearerStreamUnary(token),
        _BearerStreamStream(token),
    ]


class AuditLogClient:
    """Async client of AuditLogService.

    Every method raises AuditLogError when the call fails. Each call has a deadline
    (`timeout_s`, or the call's own `timeout_s`), and UNAVAILABLE is retried by gRPC
    itself (service config: 5 attempts, exponential backoff), which is safe because every event
    carries a client-generated UUIDv7 id that the service deduplicates on.

    >>> async with AuditLogClient("127.0.0.1:50051") as client:
    ...     stored = await client.log_general(
    ...         "acme", "agent-7", StartCallAttributes(call_id="call-1", customer_id="c-42"))
    ...     async for event in client.list_events("acme", event_types=["START_CALL"]):
    ...         print(event.id)

    Security: `credentials` (e.g. ``grpc.ssl_channel_credentials(root_pem)``) makes a TLS
    channel; `token` adds ``authorization: Bearer <token>`` to every call, as call credentials
    over TLS or, on an insecure channel (local development), as plain metadata. `token` may be a
    function returning the current token; it is called for every call (from a gRPC thread when
    TLS is on), so make it cheap.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: TokenSource | None = None,
        timeout_s: float = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        channel_options = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            *options,
        ]
        if credentials is not None:
            if token is not None:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.metadata_call_credentials(_BearerCallCredentials(token))
                )
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        else:
            interceptors = bearer_interceptors(token) if token is not None else None
            self._channel = grpc.aio.insecure_channel(
                target,
                options=channel_options,
                # grpc-stubs types interceptors as an opaque placeholder that asks for a cast.
                interceptors=cast(Any, interceptors),
            )
        self.stub = service_pb2_grpc.AuditLogServiceStub(self._channel)
        self.timeout_s = timeout_s
        # A token function is asked again for every call, so an expired token can be replaced.
        self.token_refreshes = callable(token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> AuditLogClient:
        """A client configured as every auditlog SDK reads its environment.

        AUDITLOG_ADDR (default 127.0.0.1:50051); AUDITLOG_TOKEN, a bearer token sent with
        every call; AUDITLOG_TLS_CA, a CA (PEM file) to connect with TLS, with
        AUDITLOG_TLS_CERT and AUDITLOG_TLS_KEY for a client certificate (mTLS) and
        AUDITLOG_TLS_SERVER_NAME to override the name the certificate must carry.
        """
        env = os.environ if env is None else env
        ca, cert, key = (env.get(f"AUDITLOG_TLS_{name}") for name in ("CA", "CERT", "KEY"))
        credentials = None
        if ca:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(ca).read_bytes(),
                private_key=Path(key).read_bytes() if key else None,
                certificate_chain=Path(cert).read_bytes() if cert else None,
            )
        elif cert or key:
            raise ValueError("AUDITLOG_TLS_CERT/KEY need AUDITLOG_TLS_CA")
        channel_options = list(options.pop("options", ()))
        server_name = env.get("AUDITLOG_TLS_SERVER_NAME")
        if server_name:
            channel_options.append(("grpc.ssl_target_name_override", server_name))
        return cls(
            env.get("AUDITLOG_ADDR") or "127.0.0.1:50051",
            credentials=credentials,
            token=env.get("AUDITLOG_TOKEN") or None,
            options=channel_options,
            **options,
        )

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
        """Close the channel; calls still running are cancelled."""
        await self._channel.close(None)

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    # ---- logging -----------------------------------------------------------------------------

    async def _unary(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        """One unary call with this client's deadline; failures become AuditLogError."""
        try:
            return await method(request, timeout=self._timeout(timeout_s))
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error

    async def log_event(
        self, event: AuditEvent, *, timeout_s: float | None = None
    ) -> service_pb2.LogEventResponse:
        """Store one event; returns it as stored (id, event_type, receive_time, sequence).

        An empty `event.id` is filled in (in `event` itself) with a new UUIDv7, so that sending
        the same message object again is an idempotent retry (`already_stored` is then true).

        >>> response = await client.log_event(AuditEvent(
        ...     tenant_id="acme", tenant_user_id="agent-7", logged_in=LoggedInAttributes()))
        >>> response.event.event_type == EVENT_TYPE_LOGGED_IN
        True
        """
        if not event.id:
            event.id = new_event_id()
        response: service_pb2.LogEventResponse = await self._unary(
            self.stub.LogEvent, service_pb2.LogEventRequest(event=event), timeout_s
        )
        return response

    async def log_events(
        self,
        events: Sequence[AuditEvent],
        *,
        timeout_s: float | None = None,
        acks_only: bool = False,
    ) -> service_pb2.LogEventsResponse:
        """Store a batch (at most the server's limit, 1,000 by default); one result per event.

        Empty ids are filled in as in log_event. A bad event does not sink the batch: its result
        carries the error (``result.WhichOneof("result") == "error"``) and the others are stored.
        For many events from a busy service, BatchingLogger does the batching and retrying.
        With `acks_only`, each stored event's result is an EventAck (id, sequence, receive
        time) instead of the whole event: smaller and cheaper. A response that would pass 4 MiB
        carries acks anyway (``result.WhichOneof("result") == "ack"``).
        """
        for event in events:
            if not event.id:
                event.id = new_event_id()
        request = service_pb2.LogEventsRequest(
            events=events,
            result_view=enums_pb2.RESULT_VIEW_ACK if acks_only else enums_pb2.RESULT_VIEW_EVENT,
        )
        response: service_pb2.LogEventsResponse = await self._unary(
            self.stub.LogEvents, request, timeout_s
        )
        return response

    async def log_general(
        self,
        tenant_id: str,
        tenant_user_id: str,
        payload_message: Message,
        *,
        occur_time: TimeLike | None = None,
        id: str | None = None,
        timeout_s: float | None = None,
    ) -> AuditEvent:
        """Log a general platform event; the payload's type says which one. Returns it as stored.

        >>> stored = await client.log_general(
        ...     "acme", "agent-7", StartCallAttributes(call_id="call-1", customer_id="c-42"))
        >>> stored.event_type == EVENT_TYPE_START_CALL
        True

        `occur_time` (an aware datetime or a Timestamp) defaults to the time the server receives
        the event; `id` to a new UUIDv7. A co-browsing payload raises TypeError.
        """
        event = general_event(
            tenant_id, tenant_user_id, payload_message, occur_time=occur_time, id=id
        )
        return (await self.log_event(event, timeout_s=timeout_s)).event

    async def log_cobrowse(
        self,
        tenant_id: str,
        session_id: str,
        actor: ActorValue | str,
        payload_message: Message,
        *,
        tenant_user_id: str = "",
        occur_time: TimeLike | None = None,
        id: str | None = None,
        timeout_s: float | None = None,
    ) -> AuditEvent:
        """Log a co-browsing event of a session; returns it as stored, with its `sequence`.

        `actor` is "agent" or "customer" (or an Actor value); `tenant_user_id` is the agent's,
        when known. A general payload raises TypeError.

        >>> stored = await client.log_cobrowse(
        ...     "acme", "cob-1", "customer", ClickAttributes(element=Element(id="buy")))
        >>> stored.sequence
        1
        """
        event = cobrowse_event(
            tenant_id,
            session_id,
            actor,
            payload_message,
            tenant_user_id=tenant_user_id,
            occur_time=occur_time,
            id=id,
        )
        return (await self.log_event(event, timeout_s=timeout_s)).event

    def stream_events(
        self,
        events: AsyncIterable[AuditEvent] | Iterable[AuditEvent],
        *,
        max_batch: int = 1000,
        max_in_flight: int | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[service_pb2.StreamEventResult]:
        """Send `events` over one StreamEvents call, batched; one result per event, in order.

        Each request carries the events ready at that moment (a lone event is sent at once), at
        most `max_batch`; at most `max_in_flight` events (default 4 x `max_batch`) are sent and
        not yet yielded. A result is an ack (id, sequence, receive time, already_stored) or the
        event's error; a failed call raises AuditLogError. Empty ids are filled in. The call has
        no deadline unless `timeout_s` is given. See EventStream.

        >>> async for result in client.stream_events(events):
        ...     if result.WhichOneof("result") == "error":
        ...         print(result.error.reason, result.error.message)
        """
        # stream.py builds on this module (AuditLogError), so it is imported when first used.
        from .stream import EventStream

        return aiter(
            EventStream(
                self.stub,
                events,
                max_batch=max_batch,
                max_in_flight=max_in_flight,
                timeout_s=timeout_s,
            )
        )

    # ---- reading -----------------------------------------------------------------------------

    async def get_event(
        self, tenant_id: str, event_id: str, *, timeout_s: float | None = None
    ) -> AuditEvent:
        """One event of a tenant by id (NOT_FOUND: AuditLogError with code NOT_FOUND)."""
        response: service_pb2.GetEventResponse = await self._unary(
            self.stub.GetEvent,
            service_pb2.GetEventRequest(tenant_id=tenant_id, id=event_id),
            timeout_s,
        )
        return response.event

    async def list_page(
        self, request: service_pb2.ListEventsRequest, *, timeout_s: float | None = None
    ) -> service_pb2.ListEventsResponse:
        """One ListEvents page, for callers that keep the page token themselves."""
        response: service_pb2.ListEventsResponse = await self._unary(
            self.stub.ListEvents, request, timeout_s
        )
        return response

    async def list_events(
        self,
        tenant_id: str,
        *,
        filter: service_pb2.EventFilter | None = None,
        event_types: Iterable[EventTypeValue | str] = (),
        tenant_user_id: str = "",
        customer_id: str = "",
        call_id: str = "",
        cobrowse_session_id: str = "",
        actor: ActorValue | str | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        oldest_first: bool = False,
        page_size: int = 200,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[AuditEvent]:
        """Every matching event, page after page (at most `limit`), newest first by default.

        Filters are keywords: `event_types` (EventType values or seed strings like "CLICK"),
        `tenant_user_id`, `customer_id`, `call_id`, `cobrowse_session_id`, `actor` ("agent",
        "customer"), and `start_time` (inclusive) / `end_time` (exclusive) as aware datetimes.
        Every given filter must match; an event of any of the `event_types` matches. They add to
        `filter` (an EventFilter) when both are given; `timeout_s` applies to each page.

        >>> async for event in client.list_events(
        ...     "acme", event_types=["START_CALL", "CONFERENCE_AGENT"], customer_id="c-42",
        ...     start_time=datetime(2026, 3, 1, tzinfo=UTC), limit=100):
        ...     print(event.id)
        """
        request = service_pb2.ListEventsRequest(
            tenant_id=tenant_id,
            filter=event_filter(
                filter,
                event_types=event_types,
                tenant_user_id=tenant_user_id,
                customer_id=customer_id,
                call_id=call_id,
                cobrowse_session_id=cobrowse_session_id,
                actor=actor,
                start_time=start_time,
                end_time=end_time,
            ),
            page_size=page_size if limit is None else max(1, min(page_size, limit)),
            order=(
                enums_pb2.SORT_ORDER_OLDEST_FIRST
                if oldest_first
                else enums_pb2.SORT_ORDER_NEWEST_FIRST
            ),
        )
        yielded = 0
        while True:
            page = await self.list_page(request, timeout_s=timeout_s)
            for event in page.events:
                if limit is not None and yielded >= limit:
                    return
                yield event
                yielded += 1
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def export_events(
        self,
        tenant_id: str,
        *,
        filter: service_pb2.EventFilter | None = None,
        cursor: str = "",
        from_sequence: int = 0,
        to_sequence: int = 0,
        timeout_s: float | None = None,
    ) -> AsyncIterator[service_pb2.ExportEventsResponse]:
        """A tenant's ledger export (needs `events:export`), item by item: the retention anchor
        the ledger starts from (if any), then each event in ledger order with the ledger's record
        of it (`item.event`), and the signed checkpoints inline. Every item carries the cursor an
        export resumes from (`cursor=`). Events travel in batches (one message per event costs
        both ends far more) and come out one by one. No deadline unless `timeout_s` is given.

        >>> async for item in client.export_events("acme", cursor=saved):
        ...     if item.WhichOneof("item") == "event":
        ...         print(item.event.entry.ledger_sequence, item.event.event.id)
        ...     saved = item.cursor
        """
        request = service_pb2.ExportEventsRequest(
            tenant_id=tenant_id,
            filter=filter,
            cursor=cursor,
            from_sequence=from_sequence,
            to_sequence=to_sequence,
            events_per_message=EVENTS_PER_MESSAGE,
        )
        try:
            async for response in self.stub.ExportEvents(request, timeout=timeout_s):
                for item in single_items(response):
                    yield item
        except grpc.aio.AioRpcError as error:
            raise AuditLogError(error) from error

    def tail_session(
        self,
        tenant_id: str,
        session_id: str,
        *,
        cursor: str = "",
        from_now: bool = False,
        event_types: Sequence[int] = (),
        max_retries: int = 10,
        on_caught_up: Callable[[int], None] | None = None,
        on_resume: Callable[[AuditLogError], None] | None = None,
    ) -> SessionTail:
        """Follow a co-browsing session: replay from the start (or a cursor, or now), then live.

        >>> tail = client.tail_session("acme", "cob-1")
        >>> async for event in tail:
        ...     print(event.sequence, event.WhichOneof("payload"))
        ...     save(tail.cursor)  # resume later with tail_session(..., cursor=saved)

        `on_caught_up(head)` is called when replay reaches the session's head, at once, even
        when no event follows (an idle session): that is the moment the tail is live.
        `on_resume(error)` is called each time the stream broke and the tail is about to resume
        (a console shows "reconnecting" there).
        """
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
        return SessionTail(
            self,
            request,
            max_retries=max_retries,
            on_caught_up=on_caught_up,
            on_resume=on_resume,
        )

    def tail_events(
        self,
        tenant_id: str,
        *,
        cursor: str = "",
        from_now: bool = False,
        event_types: Sequence[int] = (),
        max_retries: int = 10,
        on_caught_up: Callable[[int], None] | None = None,
        on_resume: Callable[[AuditLogError], None] | None = None,
    ) -> TenantTail:
        """Follow a tenant's whole ledger: every event of the tenant in ledger order (each with
        its ledger_sequence and ledger_hash), replayed from the start (or a cursor, or now),
        then live; resumes by itself like tail_session. What a SIEM forwarder needs."""
        request = service_pb2.TailEventsRequest(
            tenant_id=tenant_id,
            event_types=event_types,  # type: ignore[arg-type]
        )
        if cursor:
            request.cursor = cursor
        elif from_now:
            request.from_now = True
        else:
            request.from_beginning = True
        return TenantTail(
            self,
            request,  # type: ignore[arg-type]
            max_retries=max_retries,
            on_caught_up=on_caught_up,
            on_resume=on_resume,
        )


# Trailing metadata key under which the server sends the cursor a tail resumes from.
CURSOR_TRAILER = "auditlog-cursor"
_TOKEN_EXPIRED = enums_pb2.ErrorReason.Name(enums_pb2.ERROR_REASON_TOKEN_EXPIRED)
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

    `cursor` points after the last event yielded once a batch is done; saved mid-batch, it
    points before the batch, so a new tail from it replays the batch's earlier events again
    (at least once: skip them by position).

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
        on_caught_up: Callable[[int], None] | None = None,
        on_resume: Callable[[AuditLogError], None] | None = None,
    ) -> None:
        self._client = client
        self._on_caught_up = on_caught_up
        self._on_resume = on_resume
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
        # Set after a resume for an expired token, until a response arrives: a fresh token that
        # is refused at once is not worth asking for again.
        self.token_renewed_at_failure = False

    def __aiter__(self) -> AsyncIterator[AuditEvent]:
        return self._events()

    # The RPC a tail calls, and what orders its events (TenantTail overrides both).
    _method = "TailSession"

    @staticmethod
    def _position(event: AuditEvent) -> int:
        return event.sequence

    def _next_request(self) -> Any:
        request = type(self._request)()
        request.CopyFrom(self._request)
        if self.cursor:
            request.cursor = self.cursor
        return request

    async def _events(self) -> AsyncIterator[AuditEvent]:
        failures = 0
        backoff = self._initial_backoff_s
        while True:
            call = getattr(self._client.stub, self._method)(self._next_request())
            try:
                async for response in call:
                    failures, backoff = 0, self._initial_backoff_s
                    self.token_renewed_at_failure = False
                    kind = response.WhichOneof("kind")
                    if kind == "events":
                        batch = response.events.events
                        for index, event in enumerate(batch):
                            # The cursor covers the whole batch: taken before the batch's last
                            # event, it would skip the rest. A consumer that stops mid-batch
                            # has the batch's earlier events again when it resumes (skip them
                            # by position).
                            if index == len(batch) - 1:
                                self.cursor = response.cursor
                            position = self._position(event)
                            if position > self.last_sequence:
                                self.last_sequence = position
                                self.head = max(self.head, position)
                                yield event
                    elif kind == "caught_up":
                        self.head = response.caught_up.head_sequence
                        if not self.caught_up.is_set() and self._on_caught_up is not None:
                            self._on_caught_up(self.head)
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
                failure = AuditLogError(error)
                # An expired token ends a tail with its cursor: with a token function, the next
                # call carries a fresh token and resumes right there.
                renewable = (
                    failure.reason == _TOKEN_EXPIRED
                    and self._client.token_refreshes
                    and not self.token_renewed_at_failure
                )
                if (
                    error.code() not in _RESUMABLE and not renewable
                ) or failures >= self.max_retries:
                    raise failure from error
                self.token_renewed_at_failure = renewable
                failures += 1
                self.resumes += 1
                if self._on_resume is not None:
                    self._on_resume(failure)
                await asyncio.sleep(0 if renewable else max(backoff, failure.retry_delay_s or 0))
                backoff = min(backoff * 2, self._max_backoff_s)
            finally:
                call.cancel()


class TenantTail(SessionTail):
    """An async iterator over a tenant's whole ledger (TailEvents), replayed and then live, in
    ledger order; it resumes by itself exactly like SessionTail, by `ledger_sequence`.

    >>> tail = client.tail_events("acme")
    >>> async for event in tail:
    ...     forward_to_siem(event)
    ...     save(tail.cursor)
    """

    _method = "TailEvents"

    @staticmethod
    def _position(event: AuditEvent) -> int:
        return event.ledger_sequence
