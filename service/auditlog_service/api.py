"""AuditLogService servicer: validates requests, calls the repository, maps errors to statuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

import grpc
import pymongo
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from pymongo.errors import PyMongoError

from auditlog.v1 import enums_pb2, service_pb2, service_pb2_grpc

from . import convert, validation
from .errors import (
    AuditLogError,
    DatabaseUnavailable,
    EventNotFound,
    InvalidArgument,
    SlowConsumer,
)
from .event_types import REGISTRY
from .ingest import EventWriter, PendingEvent
from .storage import EventRepository, ListQuery, Outcome, Stored, database_errors
from .tail import TailHub
from .tokens import TokenError, TokenSigner, query_fingerprint
from .validation import FieldViolation, Limits

log = logging.getLogger(__name__)

ERROR_DOMAIN = "auditlog.v1"
# Trailing metadata key of the cursor a tail resumes from, on every way a tail ends.
CURSOR_TRAILER = "auditlog-cursor"
DEFAULT_PAGE_SIZE = 50
PAGE_TOKEN_PURPOSE = "page"
# Responses stay below the 4 MiB that gRPC clients accept by default, with room for the envelope.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024
# The tag and length prefix of one repeated message field, at most.
_FRAMING_BYTES = 6
# The longest `_id` a page token may point at: "<tenant>/<session>/<sequence>".
MAX_KEY_LENGTH = 2 * 128 + 2 + convert.SEQUENCE_DIGITS


def is_int(value: object) -> TypeGuard[int]:
    """An int decoded from JSON, and not a bool (which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _ack(outcome: Stored) -> service_pb2.EventAck:
    doc = outcome.doc
    ack = service_pb2.EventAck(
        id=doc["id"], sequence=doc.get("sequence", 0), already_stored=outcome.already_stored
    )
    convert.datetime_to_timestamp(doc["receive_time"], ack.receive_time)
    return ack


def _batch_result(
    pending: PendingEvent, outcome: Outcome, whole_event: bool
) -> service_pb2.LogEventResult:
    if isinstance(outcome, AuditLogError):
        return service_pb2.LogEventResult(error=to_event_error(outcome))
    if not whole_event:
        return service_pb2.LogEventResult(ack=_ack(outcome), already_stored=outcome.already_stored)
    return service_pb2.LogEventResult(
        event=pending.stored_event(outcome), already_stored=outcome.already_stored
    )


def to_status(error: AuditLogError) -> status_pb2.Status:
    """The google.rpc.Status of a domain error: ErrorInfo always, BadRequest for bad fields."""
    reason = enums_pb2.ErrorReason.Name(error.reason)
    details = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    ]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)


def to_event_error(error: AuditLogError) -> service_pb2.EventError:
    """The per-event form of a domain error, for batch results and stream acks."""
    violations = error.violations
    return service_pb2.EventError(
        code=error.code.value[0],
        reason=error.reason,
        message=error.message,
        field_violations=[
            service_pb2.FieldViolation(field=v.field, description=v.description) for v in violations
        ],
    )


@dataclass(frozen=True)
class _Status(grpc.Status):
    """A grpc.Status with extra trailing metadata (the tail's resume cursor)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: AuditLogError, cursor: str = ""
) -> NoReturn:
    """Ends the call with the error's status; a tail also gets its cursor in the trailers."""
    if cursor:
        error.metadata.setdefault("cursor", cursor)
    status = rpc_status.to_status(to_status(error))
    trailers = tuple(status.trailing_metadata)
    if cursor:
        trailers += ((CURSOR_TRAILER, cursor),)
    # abort_with_status exists on grpc.aio contexts; the grpc-stubs package predates it.
    await context.abort_with_status(  # type: ignore[attr-defined]
        _Status(status.code, status.details, trailers)
    )
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def check(
    violations: list[FieldViolation], reason: enums_pb2.ErrorReason.ValueType | None = None
) -> None:
    if violations:
        raise InvalidArgument(violations, reason)


def list_query(request: service_pb2.ListEventsRequest, limits: Limits) -> tuple[ListQuery, str]:
    """The repository query of a ListEvents request, and the fingerprint its page tokens carry."""
    filt = request.filter
    equals: dict[str, Any] = {}
    if filt.event_types:
        names = sorted({REGISTRY.by_event_type(t).type_string for t in filt.event_types})
        equals["type"] = names[0] if len(names) == 1 else {"$in": names}
    for field, column in (
        ("tenant_user_id", "tenant_user_id"),
        ("customer_id", "customer_id"),
        ("call_id", "call_id"),
        ("cobrowse_session_id", "session_id"),
    ):
        value = getattr(filt, field)
        if value:
            equals[column] = value
    if filt.actor != enums_pb2.ACTOR_UNSPECIFIED:
        equals["cobrowse.actor"] = convert.ACTOR_NAMES[filt.actor]
    page_size = request.page_size or DEFAULT_PAGE_SIZE
    query = ListQuery(
        tenant_id=request.tenant_id,
        newest_first=request.order != enums_pb2.SORT_ORDER_OLDEST_FIRST,
        limit=min(page_size, limits.max_page_size),
        start_time=(
            convert.timestamp_to_datetime(filt.start_time) if filt.HasField("start_time") else None
        ),
        end_time=(
            convert.timestamp_to_datetime(filt.end_time) if filt.HasField("end_time") else None
        ),
        equals=equals,
    )
    fingerprint = query_fingerprint(
        [
            request.tenant_id,
            json_format.MessageToDict(filt, preserving_proto_field_name=True),
            query.newest_first,
        ]
    )
    return query, fingerprint


class AuditLogServicer(service_pb2_grpc.AuditLogServiceServicer):
    """The AuditLogService RPCs."""

    def __init__(
        self,
        repository: EventRepository,
        writer: EventWriter,
        limits: Limits,
        signer: TokenSigner,
        hub: TailHub,
        *,
        max_read_time_s: float = 10.0,
    ) -> None:
        self._hub = hub
        self._max_read_time_s = max_read_time_s
        self._repository = repository
        self._writer = writer
        self._limits = limits
        self._signer = signer

    async def _run(
        self, context: grpc.aio.ServicerContext[Any, Any], call: Any, *, read: bool = False
    ) -> Any:
        """Runs an RPC body; every failure ends as a status with details, never a bare crash.

        A read gets a deadline of its own, the call's capped by the server, so that a slow
        query ends as DEADLINE_EXCEEDED instead of tying up a connection until the socket
        timeout and being reported as an outage.
        """
        try:
            if not read:
                return await call
            remaining = context.time_remaining()
            budget = self._max_read_time_s if remaining is None else remaining
            with pymongo.timeout(max(0.001, min(budget, self._max_read_time_s))):
                return await call
        except DatabaseUnavailable as error:
            await abort(context, error.for_read() if read else error)
        except AuditLogError as error:
            await abort(context, error)
        except PyMongoError as exc:
            # Failures the repository does not classify (e.g. an unexpected server error) are
            # still the database's: reported as UNAVAILABLE, so clients retry idempotently.
            log.warning("database error: %r", exc)
            mapped = database_errors(exc) or DatabaseUnavailable(type(exc).__name__)
            if read and isinstance(mapped, DatabaseUnavailable):
                mapped = mapped.for_read()
            await abort(context, mapped)

    # ---- ingest ------------------------------------------------------------------------------

    async def LogEvent(
        self,
        request: service_pb2.LogEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.LogEventResponse:
        async def body() -> service_pb2.LogEventResponse:
            if not request.HasField("event"):
                check([FieldViolation("event", "required")])
            check(validation.validate_event(request.event, "event", self._limits))
            pending, outcome = await self._writer.write(request.event)
            return service_pb2.LogEventResponse(
                event=pending.stored_event(outcome),
                already_stored=isinstance(outcome, Stored) and outcome.already_stored,
            )

        result: service_pb2.LogEventResponse = await self._run(context, body())
        return result

    async def LogEvents(
        self,
        request: service_pb2.LogEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.LogEventsResponse:
        async def body() -> service_pb2.LogEventsResponse:
            check(
                validation.validate_log_events_size(request, self._limits),
                enums_pb2.ERROR_REASON_BATCH_TOO_LARGE,
            )
            results: list[service_pb2.LogEventResult | None] = [None] * len(request.events)
            valid: list[int] = []
            for index, event in enumerate(request.events):
                violations = validation.validate_event(event, f"events[{index}]", self._limits)
                if violations:
                    results[index] = service_pb2.LogEventResult(
                        error=to_event_error(InvalidArgument(violations))
                    )
                else:
                    valid.append(index)
            written = await self._writer.write_many([request.events[i] for i in valid])
            whole_events = request.result_view != enums_pb2.RESULT_VIEW_ACK
            size = 0
            for index, (pending, outcome) in zip(valid, written, strict=True):
                result = _batch_result(pending, outcome, whole_events)
                results[index] = result
                size += result.ByteSize() + _FRAMING_BYTES
            response = service_pb2.LogEventsResponse(results=[r for r in results if r is not None])
            if whole_events and size > MAX_RESPONSE_BYTES:
                # Everything is stored; only the answer must shrink so that the client can read it.
                for index, (pending, outcome) in zip(valid, written, strict=True):
                    response.results[index].CopyFrom(_batch_result(pending, outcome, False))
            return response

        result: service_pb2.LogEventsResponse = await self._run(context, body())
        return result

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[service_pb2.StreamEventsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[service_pb2.StreamEventsResponse]:
        # Writes are pipelined: many events are in flight at once, acks go out in request order.
        in_flight: asyncio.Queue[tuple[int, PendingEvent | service_pb2.EventError] | None]
        in_flight = asyncio.Queue(maxsize=4 * self._limits.max_batch_events)

        async def read_requests() -> None:
            index = 0
            try:
                async for message in request_iterator:
                    path = f"requests[{index}].event"
                    if isinstance(message, UnparsableRequest):
                        violations = _unparsable_error(message).violations
                        violations = [
                            FieldViolation(f"requests[{index}]", v.description) for v in violations
                        ]
                    elif not message.HasField("event"):
                        violations = [FieldViolation(path, "required")]
                    else:
                        violations = validation.validate_event(message.event, path, self._limits)
                    if violations:
                        await in_flight.put((index, to_event_error(InvalidArgument(violations))))
                    else:
                        await in_flight.put((index, self._writer.submit(message.event)))
                    index += 1
            finally:
                await in_flight.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            while (item := await in_flight.get()) is not None:
                index, pending = item
                if isinstance(pending, service_pb2.EventError):
                    yield service_pb2.StreamEventsResponse(request_index=index, error=pending)
                    continue
                outcome = await pending.outcome
                if isinstance(outcome, AuditLogError):
                    yield service_pb2.StreamEventsResponse(
                        request_index=index, error=to_event_error(outcome)
                    )
                    continue
                yield service_pb2.StreamEventsResponse(request_index=index, ack=_ack(outcome))
            await reader  # surfaces a failure of the request stream
        finally:
            reader.cancel()

    async def TailSession(  # type: ignore[override]  # writes with context.write, not yield
        self,
        request: service_pb2.TailSessionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # Written with context.write (not yield) so that a write that blocks on a client that
        # does not read can be bounded in time.
        cursor = ""
        try:
            check(validation.validate_tail_request(request, self._limits))
            async for response, _ in self._hub.tail(request):
                try:
                    await asyncio.wait_for(
                        context.write(response), self._hub.settings.slow_consumer_timeout_s
                    )
                except TimeoutError:
                    raise SlowConsumer(
                        "the client did not read for "
                        f"{self._hub.settings.slow_consumer_timeout_s:g}s; resume from the cursor"
                    ) from None
                cursor = response.cursor
        except DatabaseUnavailable as error:
            await abort(context, error.for_read(), cursor)
        except AuditLogError as error:
            await abort(context, error, cursor)
        except PyMongoError as exc:
            mapped = database_errors(exc) or DatabaseUnavailable(type(exc).__name__)
            if isinstance(mapped, DatabaseUnavailable):
                mapped = mapped.for_read()
            await abort(context, mapped, cursor)

    # ---- queries -----------------------------------------------------------------------------

    async def GetEvent(
        self,
        request: service_pb2.GetEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.GetEventResponse:
        async def body() -> service_pb2.GetEventResponse:
            check(validation.validate_get_request(request, self._limits))
            doc = await self._repository.find_by_key(
                convert.event_key(request.tenant_id, request.id)
            )
            if doc is None:
                raise EventNotFound(request.tenant_id, request.id)
            return service_pb2.GetEventResponse(event=convert.from_document(doc))

        result: service_pb2.GetEventResponse = await self._run(context, body(), read=True)
        return result

    async def ListEvents(
        self,
        request: service_pb2.ListEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> service_pb2.ListEventsResponse:
        async def body() -> service_pb2.ListEventsResponse:
            check(validation.validate_list_request(request, self._limits))
            query, fingerprint = list_query(request, self._limits)
            if request.page_token:
                query.after = self._decode_page_token(
                    request.page_token, fingerprint, request.tenant_id
                )
            limit = query.limit
            query.limit = limit + 1  # one more tells whether another page exists
            docs = await self._repository.list_events(query)
            response = service_pb2.ListEventsResponse()
            size = 0
            for doc in docs[:limit]:
                event = convert.from_document(doc)
                size += event.ByteSize() + _FRAMING_BYTES
                if response.events and size > MAX_RESPONSE_BYTES:
                    break  # a short page (AIP-158) that a default client can still read
                response.events.append(event)
            if len(docs) > len(response.events):
                last = docs[len(response.events) - 1]
                response.next_page_token = self._signer.encode(
                    PAGE_TOKEN_PURPOSE,
                    {
                        "q": fingerprint,
                        "t": convert.datetime_to_millis(last["occur_time"]),
                        "i": last["_id"],
                    },
                )
            return response

        result: service_pb2.ListEventsResponse = await self._run(context, body(), read=True)
        return result

    def _decode_page_token(
        self, token: str, fingerprint: str, tenant_id: str
    ) -> tuple[dt.datetime, str]:
        def invalid(why: str) -> InvalidArgument:
            return InvalidArgument(
                [FieldViolation("page_token", why)], enums_pb2.ERROR_REASON_INVALID_PAGE_TOKEN
            )

        try:
            payload = self._signer.decode(PAGE_TOKEN_PURPOSE, token)
        except TokenError as exc:
            raise invalid(f"not a page token of this service ({exc})") from exc
        if payload.get("q") != fingerprint:
            raise invalid("the token belongs to a request with another tenant, filter or order")
        # A valid signature says who made the token, not that its content is sane (a leaked or
        # default key makes any content reachable), so every field is checked like input.
        millis, last_id = payload.get("t"), payload.get("i")
        if not is_int(millis) or not 0 <= millis <= validation.MAX_MILLIS:
            raise invalid("malformed: position time out of range")
        if (
            not isinstance(last_id, str)
            or len(last_id) > MAX_KEY_LENGTH
            or not last_id.startswith(f"{tenant_id}/")
        ):
            raise invalid("malformed: position out of range")
        last_time = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)
        return last_time, last_id


@dataclass(frozen=True)
class UnparsableRequest:
    """Stands in for a request message that protobuf could not decode."""

    message_type: str
    error: str


def _lenient_parser(message_class: Any) -> Any:
    """A request deserializer that hands undecodable bytes to the servicer instead of failing.

    gRPC answers a deserializer exception with a bare UNKNOWN; this way the servicer can answer
    INVALID_ARGUMENT with details, like for any other bad input.
    """

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return UnparsableRequest(message_class.DESCRIPTOR.full_name, str(exc))

    return parse


def _unparsable_error(request: UnparsableRequest) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("request", f"not a valid {request.message_type}: {request.error}")]
    )


def service_handler(servicer: AuditLogServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """The AuditLogService method handlers, with lenient request parsing."""

    def unary(method: Any) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, UnparsableRequest):
                await abort(context, _unparsable_error(request))
            return await method(request, context)

        return handle

    async def tail(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if isinstance(request, UnparsableRequest):
            await abort(context, _unparsable_error(request))
        await servicer.TailSession(request, context)

    rpc = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
    messages = {m.name: m for m in rpc.methods}

    def types(name: str) -> tuple[Any, Any]:
        method = messages[name]
        request = getattr(service_pb2, method.input_type.name)
        response = getattr(service_pb2, method.output_type.name)
        return _lenient_parser(request), response.SerializeToString

    handlers = {}
    for name in ("LogEvent", "LogEvents", "GetEvent", "ListEvents"):
        parse, serialize = types(name)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            unary(getattr(servicer, name)),
            request_deserializer=parse,
            response_serializer=serialize,
        )
    parse, serialize = types("StreamEvents")
    handlers["StreamEvents"] = grpc.stream_stream_rpc_method_handler(
        servicer.StreamEvents, request_deserializer=parse, response_serializer=serialize
    )
    parse, serialize = types("TailSession")
    handlers["TailSession"] = grpc.unary_stream_rpc_method_handler(
        tail, request_deserializer=parse, response_serializer=serialize
    )
    return grpc.method_handlers_generic_handler(rpc.full_name, handlers)
