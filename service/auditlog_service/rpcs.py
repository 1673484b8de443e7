"""The RPCs of AuditLogService, written once for every transport (gRPC, Connect, gRPC-Web).

Each method takes a Call (the verified caller, from access.CallGuard) and a request message and
returns a response, or yields responses for streams; every failure is raised as an AuditLogError,
which the transport turns into its status with google.rpc details. Nothing here knows grpc.aio.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import operator
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

import pymongo
from google.protobuf import json_format
from pymongo.errors import PyMongoError

from auditlog.ledger import Finding, LedgerVerifier, VerificationKeys, genesis_hash
from auditlog.v1 import audit_event_pb2, enums_pb2, ledger_pb2, service_pb2

from . import convert, responses, validation
from .access import Call, CallGuard
from .error_details import to_event_error
from .errors import (
    AuditLogError,
    DatabaseUnavailable,
    EventNotFound,
    InvalidArgument,
    InvalidCursor,
    PermissionDenied,
    RateLimited,
    ShuttingDown,
)
from .event_types import REGISTRY
from .ingest import EventWriter, PendingBatch, PendingEvent
from .ledger import LedgerHead, Sequencer, retention_id
from .ledger_reads import (
    EntryFilter,
    LedgerReader,
    Placed,
    exported_event_into,
)
from .ledger_tail import LedgerWatches
from .retention import retention_seconds
from .storage import EventRepository, ListQuery, database_errors
from .tail import TailHub, TailSettings
from .tokens import TokenError, TokenSigner, query_fingerprint
from .validation import FieldViolation, Limits

log = logging.getLogger(__name__)

# An event's tenant, for map() over a batch.
_TENANT_OF = operator.attrgetter("tenant_id")


def sole_tenant(events: list[audit_event_pb2.AuditEvent]) -> str | None:
    """The tenant of a batch whose events are all of one (None: of several, or no events)."""
    tenants = set(map(_TENANT_OF, events))
    return next(iter(tenants)) if len(tenants) == 1 else None


DEFAULT_PAGE_SIZE = 50
PAGE_TOKEN_PURPOSE = "page"
EXPORT_CURSOR_PURPOSE = "export-cursor"
# A ledger-served ListEvents page looks at no more entries than this, nor for longer than this
# (then a short page): a rare filter answers every call well within a second, even on a busy
# machine, where 5,000 entries took up to 1 s at 1,000,000 events.
MAX_EXAMINED = 5000
MAX_EXAMINE_S = 0.3
# Responses stay below the 4 MiB that gRPC clients accept by default, with room for the envelope.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024
# An ExportEvents batch ends once its events reach this size (well below what clients accept).
MAX_EXPORT_BATCH_BYTES = 1024 * 1024
# The tag and length prefix of one repeated message field, at most.
_FRAMING_BYTES = 6
# The longest `_id` a page token may point at: "<tenant>/<session>/<sequence>".
MAX_KEY_LENGTH = 2 * 128 + 2 + convert.SEQUENCE_DIGITS
# An ingest stream waits at most this long for a tenant's event budget before it answers
# RESOURCE_EXHAUSTED: short bursts are smoothed by backpressure, long ones are refused.
MAX_STREAM_RATE_WAIT_S = 1.0


@dataclass(frozen=True)
class UnparsableRequest:
    """Stands in for a request message that protobuf could not decode."""

    message_type: str
    error: str

    def as_error(self, path: str = "request") -> InvalidArgument:
        return InvalidArgument(
            [FieldViolation(path, f"not a valid {self.message_type}: {self.error}")]
        )


def is_int(value: object) -> TypeGuard[int]:
    """An int decoded from JSON, and not a bool (which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check(
    violations: list[FieldViolation], reason: enums_pb2.ErrorReason.ValueType | None = None
) -> None:
    if violations:
        raise InvalidArgument(violations, reason)


class _EventWindow:
    """The places for events in flight on one ingest stream. A batch takes as many places as it
    has events, in one step (a semaphore took them one by one: a coroutine per event). One
    reader takes places, so waiters need no queue."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._freed = asyncio.Event()

    async def acquire(self, places: int) -> None:
        while self._free < places:
            self._freed.clear()
            await self._freed.wait()
        self._free -= places

    def release(self, places: int) -> None:
        self._free += places
        self._freed.set()


# What the ingest stream answers a request of a batch with: per event, an error or its place in
# the events of the batch that went to the database.
_BatchAnswers = tuple[list[service_pb2.EventError | int], PendingBatch | None]
# What the ingest stream answers a request with: an event on its way, an error, or a batch's.
_StreamAnswer = PendingEvent | service_pb2.EventError | _BatchAnswers
_NOT_TAKEN_AT_SHUTDOWN = to_event_error(
    ShuttingDown(
        "the server is shutting down; this event was not stored, send it to another server"
    )
)


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


class _DatabaseFailures:
    """See database_failures. A class, not a generator-based context manager: every write
    enters one, and a generator's costs 1.0 against 0.2 us to enter and leave."""

    __slots__ = ("_read",)

    def __init__(self, *, read: bool) -> None:
        self._read = read

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any
    ) -> None:
        if exc is None:
            return
        read = self._read
        if isinstance(exc, DatabaseUnavailable):
            raise exc.for_read() if read else exc from None
        if isinstance(exc, PyMongoError):
            # Failures the repository does not classify (e.g. an unexpected server error) are
            # still the database's: reported as UNAVAILABLE, so clients retry idempotently.
            log.warning("database error: %r", exc)
            mapped = database_errors(exc) or DatabaseUnavailable(type(exc).__name__)
            if read and isinstance(mapped, DatabaseUnavailable):
                mapped = mapped.for_read()
            raise mapped from exc


_READ_FAILURES = _DatabaseFailures(read=True)
_WRITE_FAILURES = _DatabaseFailures(read=False)


def database_failures(*, read: bool) -> _DatabaseFailures:
    """Database failures as service errors: a read's slow query is DEADLINE_EXCEEDED, an outage
    UNAVAILABLE (worded for reads or writes); never a bare internal error."""
    return _READ_FAILURES if read else _WRITE_FAILURES


class AuditLogRpcs:
    """The AuditLogService RPCs over the repository, the writer and the tail hub."""

    def __init__(
        self,
        *,
        repository: EventRepository,
        writer: EventWriter,
        limits: Limits,
        signer: TokenSigner,
        hub: TailHub,
        guard: CallGuard,
        max_read_time_s: float = 10.0,
        sequencer: Sequencer | None = None,
        list_from: str = "auto",
        tail_settings: TailSettings | None = None,
        default_retention_days: float = 0.0,
    ) -> None:
        self._repository = repository
        self._sequencer = sequencer
        self._list_from = list_from
        self._default_retention_days = default_retention_days
        self._reader = LedgerReader(sequencer.store, repository) if sequencer is not None else None
        self.ledger_watches = (
            LedgerWatches(sequencer, tail_settings or TailSettings(), signer)
            if sequencer is not None
            else None
        )
        self._writer = writer
        self._limits = limits
        self._signer = signer
        self._hub = hub
        self._guard = guard
        self._max_read_time_s = max_read_time_s
        self._closing = False
        self._ingest_readers: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def _reading(self, call: Call) -> Iterator[None]:
        """A read gets a deadline of its own, the call's capped by the server, so that a slow
        query ends as DEADLINE_EXCEEDED instead of holding a connection until the socket
        timeout and being reported as an outage."""
        remaining = call.time_remaining()
        budget = self._max_read_time_s if remaining is None else remaining
        with (
            database_failures(read=True),
            pymongo.timeout(max(0.001, min(budget, self._max_read_time_s))),
        ):
            yield

    def _event_denial(self, call: Call, tenant_id: str) -> AuditLogError | None:
        """Why an event of `tenant_id` may not be written by this call, if it may not."""
        if not self._guard.covers(call, tenant_id):
            return PermissionDenied(f"the token is not valid for tenant {tenant_id!r}")
        wait = self._guard.charge_events(tenant_id, 1)
        if wait:
            return RateLimited(f"tenant {tenant_id!r} is over its limit of events a second", wait)
        return None

    # ---- ingest ------------------------------------------------------------------------------

    async def log_event(
        self, call: Call, request: service_pb2.LogEventRequest
    ) -> responses.SerializedResponse:
        if not request.HasField("event"):
            check([FieldViolation("event", "required")])
        # Serialized once: the native checker and the writer's preparer both read it.
        serialized = request.event.SerializeToString()
        check(validation.validate_event(request.event, "event", self._limits, serialized))
        self._guard.require_tenant(call, request.event.tenant_id)
        denial = self._event_denial(call, request.event.tenant_id)
        if denial is not None:
            raise denial
        with database_failures(read=False):
            pending, outcome = await self._writer.write(request.event, serialized)
        response = responses.log_event_response(pending.write, outcome)
        call.events_stored = 1
        return response

    def _taken_whole(
        self,
        call: Call,
        events: list[audit_event_pb2.AuditEvent],
        serialized: list[bytes],
    ) -> tuple[list[audit_event_pb2.AuditEvent], list[bytes], dict[str, int]]:
        """A batch without violations, of one tenant that the token covers, is taken whole: its
        events, their serializations, and the tenant's count; else nothing ({} for tenants),
        and log_events looks at each event. In process, 1,000 events: 0.11 us an event against
        0.27 for the look at each."""
        tenant_id = sole_tenant(events)
        if tenant_id is not None and self._guard.covers(call, tenant_id):
            return events, serialized, {tenant_id: len(events)}
        return [], [], {}

    async def log_events(
        self, call: Call, request: service_pb2.LogEventsRequest
    ) -> responses.SerializedResponse:
        check(
            validation.validate_log_events_size(request, self._limits),
            enums_pb2.ERROR_REASON_BATCH_TOO_LARGE,
        )
        refused: dict[int, service_pb2.EventError] = {}
        # The events themselves too: indexing a repeated field again makes a new wrapper each.
        events = list(request.events)
        serialized_events = convert.serialized_events(events)  # checker, writer
        violations_of = validation.batch_violations(events, serialized_events, self._limits)
        valid_events, valid_serialized, tenants = (
            ([], [], {}) if violations_of else self._taken_whole(call, events, serialized_events)
        )
        for index, event in enumerate(() if tenants else events):
            violations = violations_of.get(index)
            if violations:
                violations = validation.placed(f"events[{index}]", violations)
                refused[index] = to_event_error(InvalidArgument(violations))
                continue
            tenant_id = event.tenant_id
            # The token is asked about a tenant at its first event taken (a batch is mostly of
            # one tenant); an event of a tenant it does not cover is never counted.
            count = tenants.get(tenant_id)
            if count is None and not self._guard.covers(call, tenant_id):
                refused[index] = to_event_error(
                    PermissionDenied(f"the token is not valid for tenant {tenant_id!r}")
                )
                continue
            valid_events.append(event)
            valid_serialized.append(serialized_events[index])
            tenants[tenant_id] = (count or 0) + 1
        if tenants:
            call.tenant = call.tenant or next(iter(tenants))
        for tenant_id, count in tenants.items():
            # A batch is admitted whole or not at all, so a retry after the wait resends it as is.
            wait = self._guard.charge_events(tenant_id, count)
            if wait:
                raise RateLimited(
                    f"tenant {tenant_id!r} is over its limit of events a second", wait
                )
        with database_failures(read=False):
            written = await self._writer.write_many(valid_events, valid_serialized)
        whole_events = request.result_view != enums_pb2.RESULT_VIEW_ACK
        count = len(request.events)
        response, stored = responses.log_events_response(
            count, refused, written, whole_events=whole_events
        )
        if whole_events and len(response.data) > MAX_RESPONSE_BYTES:
            # Everything is stored; only the answer must shrink so that the client can read it.
            response, stored = responses.log_events_response(
                count, refused, written, whole_events=False
            )
        call.events_stored += stored
        return response

    async def stream_events(
        self,
        call: Call,
        requests: AsyncIterator[service_pb2.StreamEventsRequest | UnparsableRequest],
    ) -> AsyncIterator[responses.SerializedResponse]:
        """Ingest stream: one answer per request (one result per event of a batch), in request
        order.

        Writes are pipelined: many events are in flight at once. At shutdown the server stores
        nothing more: it answers each event still arriving with a SHUTTING_DOWN error (so the
        producer stops sending and half-closes), answers what it took once the database has,
        and ends the stream UNAVAILABLE. A producer that keeps sending is cut off after a short
        drain; ending a call while the client still writes can make some gRPC client libraries
        report INTERNAL instead of the status.
        """
        # The window bounds how many are in flight; the queue itself is unbounded so that the
        # end marker always fits.
        in_flight: asyncio.Queue[tuple[int, int, _StreamAnswer] | None] = asyncio.Queue()
        # Events (not requests) in flight: a batch takes as many places as it has events.
        window = _EventWindow(4 * self._limits.max_batch_events)
        # Tenants the call's token was found to cover: a stream's principal does not change,
        # so the token is asked about a tenant once a stream, not once an event.
        covered: set[str] = set()

        async def answer_of(index: int, message: Any) -> _StreamAnswer:
            if isinstance(message, UnparsableRequest):
                return to_event_error(message.as_error(f"requests[{index}]"))
            if message.events:
                if message.HasField("event"):
                    return to_event_error(
                        InvalidArgument(
                            [FieldViolation(f"requests[{index}].event", "set with events")]
                        )
                    )
                if len(message.events) > self._limits.max_batch_events:
                    return to_event_error(
                        InvalidArgument(
                            [
                                FieldViolation(
                                    f"requests[{index}].events",
                                    f"at most {self._limits.max_batch_events} events per request",
                                )
                            ],
                            enums_pb2.ERROR_REASON_BATCH_TOO_LARGE,
                        )
                    )
                events = list(message.events)
                serialized_events = convert.serialized_events(events)
                violations_of = validation.batch_violations(events, serialized_events, self._limits)
                if taken_whole(events, violations_of):
                    taken = self._writer.submit_batch(events, serialized_events)
                    return list(range(len(events))), taken
                answers: list[service_pb2.EventError | int] = []
                admitted: list[audit_event_pb2.AuditEvent] = []
                admitted_serialized: list[bytes] = []  # for checker and writer alike
                for n, event in enumerate(events):
                    serialized = serialized_events[n]
                    refusal = refusal_now(event, serialized, index, n, violations_of.get(n, []))
                    if isinstance(refusal, float):
                        refusal = await refusal_after_wait(event.tenant_id, refusal)
                    answers.append(len(admitted) if refusal is None else refusal)
                    if refusal is None:
                        admitted.append(event)
                        admitted_serialized.append(serialized)
                batch = (
                    self._writer.submit_batch(admitted, admitted_serialized) if admitted else None
                )
                return answers, batch
            if not message.HasField("event"):
                return to_event_error(
                    InvalidArgument([FieldViolation(f"requests[{index}].event", "required")])
                )
            serialized = message.event.SerializeToString()
            refusal = refusal_now(message.event, serialized, index)
            if isinstance(refusal, float):
                refusal = await refusal_after_wait(message.event.tenant_id, refusal)
            return self._writer.submit(message.event, serialized) if refusal is None else refusal

        def taken_whole(
            events: list[audit_event_pb2.AuditEvent],
            violations_of: dict[int, list[FieldViolation]],
        ) -> bool:
            """Whether a batch is taken whole at once, as refusal_now would take each of its
            events: none has a violation, the server is not closing, and they are of one tenant
            the token covers, whose rate admits them all now (charged for all of them here).
            Otherwise nothing was charged, and refusal_now looks at each event."""
            if self._closing or violations_of:
                return False
            tenant_id = sole_tenant(events)
            if tenant_id is None:
                return False  # each tenant charged in turn could leave one charged twice
            return covers(tenant_id) and not self._guard.charge_events(tenant_id, len(events))

        def covers(tenant_id: str) -> bool:
            """Whether the call's token covers the tenant (asked once a stream)."""
            if tenant_id not in covered:
                if not self._guard.covers(call, tenant_id):
                    return False
                covered.add(tenant_id)
                call.tenant = call.tenant or tenant_id
            return True

        def refusal_now(
            event: audit_event_pb2.AuditEvent,
            serialized: bytes,
            index: int,
            n: int | None = None,
            violations: list[FieldViolation] | None = None,
        ) -> service_pb2.EventError | float | None:
            """Why an event (of request `index`, event `n` of its batch) is not taken (None: it
            is; seconds: its tenant is over its rate). `violations`: its validation's, when its
            batch was validated already. Not a coroutine: one per event of a batch cost more
            than the checks."""
            if violations is None:
                violations = validation.validate_event(event, "", self._limits, serialized)
            if violations:
                path = f"requests[{index}].event" if n is None else f"requests[{index}].events[{n}]"
                return to_event_error(InvalidArgument(validation.placed(path, violations)))
            if self._closing:
                return _NOT_TAKEN_AT_SHUTDOWN
            tenant_id = event.tenant_id
            if not covers(tenant_id):
                return to_event_error(
                    PermissionDenied(f"the token is not valid for tenant {tenant_id!r}")
                )
            wait = self._guard.charge_events(tenant_id, 1)
            return float(wait) if wait else None

        async def refusal_after_wait(tenant_id: str, wait: float) -> service_pb2.EventError | None:
            """An event of a tenant over its rate: taken after a short wait, or refused."""
            if wait <= MAX_STREAM_RATE_WAIT_S:
                # Backpressure: not reading is how a stream tells a producer to slow down.
                await asyncio.sleep(wait)
                wait = self._guard.charge_events(tenant_id, 1)
            if wait:
                return to_event_error(
                    RateLimited(f"tenant {tenant_id!r} is over its limit of events a second", wait)
                )
            return None

        async def read_requests() -> None:
            index = 0
            try:
                async for message in requests:
                    places = 1
                    if not isinstance(message, UnparsableRequest):
                        places = min(max(len(message.events), 1), self._limits.max_batch_events)
                    await window.acquire(places)
                    in_flight.put_nowait((index, places, await answer_of(index, message)))
                    index += 1
            finally:
                in_flight.put_nowait(None)

        reader = asyncio.create_task(read_requests())
        self._ingest_readers.add(reader)
        try:
            while (item := await in_flight.get()) is not None:
                index, places, pending = item
                window.release(places)
                if isinstance(pending, tuple):
                    answers, batch = pending
                    outcomes = await asyncio.shield(batch.outcomes) if batch else []
                    response, stored = responses.stream_batch_response(index, answers, outcomes)
                    call.events_stored += stored
                    yield response
                    continue
                if isinstance(pending, service_pb2.EventError):
                    yield responses.stream_event_response(index, pending)
                    continue
                outcome = await pending.outcome
                if not isinstance(outcome, AuditLogError):
                    call.events_stored += 1
                yield responses.stream_event_response(index, outcome)
            if self._closing:
                raise ShuttingDown(
                    "the server is shutting down; every event read so far was answered, "
                    "send the rest to another server"
                )
            await reader  # surfaces a failure of the request stream
        finally:
            self._ingest_readers.discard(reader)
            reader.cancel()

    def stop_ingest(self, drain_s: float) -> None:
        """Shutdown: ingest streams take no more events, and end once the producer half-closed
        and its events are answered, or `drain_s` later."""
        self._closing = True

        def cut_off() -> None:
            for reader in list(self._ingest_readers):
                reader.cancel()

        asyncio.get_running_loop().call_later(drain_s, cut_off)

    # ---- queries -----------------------------------------------------------------------------

    async def get_event(
        self, call: Call, request: service_pb2.GetEventRequest
    ) -> service_pb2.GetEventResponse:
        check(validation.validate_get_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        with self._reading(call):
            doc = await self._repository.find_by_key(
                convert.event_key(request.tenant_id, request.id)
            )
            if doc is None:
                raise EventNotFound(request.tenant_id, request.id)
            event = convert.from_document(doc)
            if self._reader is not None:
                event.ledger_sequence, event.ledger_hash = await self._reader.ledger_fields(doc)
        call.events_returned = 1
        return service_pb2.GetEventResponse(event=event)

    async def list_events(
        self, call: Call, request: service_pb2.ListEventsRequest
    ) -> service_pb2.ListEventsResponse:
        check(validation.validate_list_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        if self._lists_from_ledger():
            return await self._list_from_ledger(call, request)
        query, fingerprint = list_query(request, self._limits)
        if request.page_token:
            query.after = self._decode_page_token(
                request.page_token, fingerprint, request.tenant_id
            )
        limit = query.limit
        query.limit = limit + 1  # one more tells whether another page exists
        with self._reading(call):
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
        call.events_returned = len(response.events)
        return response

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

    # ---- tails -------------------------------------------------------------------------------

    async def tail_session(
        self, call: Call, request: service_pb2.TailSessionRequest
    ) -> AsyncIterator[service_pb2.TailSessionResponse]:
        """The session's responses; an ending is raised as an AuditLogError whose metadata
        carries the cursor of the last response (the transport sends it as a trailer too)."""
        check(validation.validate_tail_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        self._guard.open_tail(request.tenant_id)
        # Where a new call resumes: after the last response the client got (a transport sends
        # the next response only after the previous one was written).
        cursor = request.cursor if request.WhichOneof("start") == "cursor" else ""
        try:
            with database_failures(read=True):
                async for response, _ in self._hub.tail(
                    request, expires_at=call.principal.expires_at
                ):
                    call.events_returned += len(response.events.events)
                    yield response
                    cursor = response.cursor
        except AuditLogError as error:
            if cursor:
                error.metadata.setdefault("cursor", cursor)
            raise
        finally:
            self._guard.close_tail(request.tenant_id)

    # ---- the ledger ----------------------------------------------------------------------------

    def _lists_from_ledger(self) -> bool:
        if self._reader is None or self._list_from == "index":
            return False
        return self._list_from == "ledger" or not self._repository.range_reads

    def _ledger(self) -> tuple[Sequencer, LedgerReader]:
        if self._sequencer is None or self._reader is None:
            raise DatabaseUnavailable("the ledger is not running on this server", writing=False)
        return self._sequencer, self._reader

    async def _list_from_ledger(
        self, call: Call, request: service_pb2.ListEventsRequest
    ) -> service_pb2.ListEventsResponse:
        """A page read from the ledger by `_id`: newest first from the head (oldest first from
        the start), filters evaluated on the entries, at most MAX_EXAMINED entries looked at (for
        at most MAX_EXAMINE_S), so that no call scans the collection; a page may be short, with a
        next page token."""
        sequencer, reader = self._ledger()
        _, fingerprint = list_query(request, self._limits)
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, self._limits.max_page_size)
        newest_first = request.order != enums_pb2.SORT_ORDER_OLDEST_FIRST
        wanted = EntryFilter.of(request.filter)
        with self._reading(call):
            # What callers were told is stored is listed: sequence it first (read your writes).
            head = await sequencer.sequence(request.tenant_id)
            position = self._decode_ledger_token(request.page_token, fingerprint, head)
            if newest_first:
                if position is None:
                    walk = reader.backward(request.tenant_id, head.block, None)
                else:
                    walk = reader.backward(request.tenant_id, position[0], position[1] - 1)
            else:
                after = position[0] if position else head.first - 1
                walk = reader.forward(request.tenant_id, after + 1, head.sequence, head)
            matched: list[Placed] = []
            examined = 0
            last: Placed | None = None
            stopped = False
            examine_until = time.monotonic() + MAX_EXAMINE_S
            async for placed in walk:
                examined += 1
                last = placed
                if placed.sequence < head.first:
                    break  # before the retention anchor: removed, and so is everything older
                if wanted.matches(placed.entry["x"]):
                    matched.append(placed)
                    if len(matched) == page_size:
                        stopped = True
                        break
                if examined >= MAX_EXAMINED or time.monotonic() > examine_until:
                    stopped = True  # a short page (AIP-158): the next one goes on from here
                    break
            listed = await reader.events(matched)
        response = service_pb2.ListEventsResponse()
        size = 0
        cut: Placed | None = None
        for placed, event in listed:
            if event is None:
                continue  # removed (tampering: VerifyLedger reports it)
            size += event.ByteSize() + _FRAMING_BYTES
            if response.events and size > MAX_RESPONSE_BYTES:
                cut = placed
                break
            response.events.append(event)
        # Positions: newest first, (block, n) means "the entries of that block before index n";
        # oldest first, (s, 0) means "the entries after sequence s".
        following: tuple[int, int] | None = None
        if cut is not None:
            following = (cut.block, cut.index + 1) if newest_first else (cut.sequence - 1, 0)
        elif stopped and last is not None:
            following = (last.block, last.index) if newest_first else (last.sequence, 0)
        if following is not None:
            response.next_page_token = self._signer.encode(
                PAGE_TOKEN_PURPOSE, {"q": fingerprint, "l": list(following)}
            )
        call.events_returned = len(response.events)
        return response

    def _decode_ledger_token(
        self, token: str, fingerprint: str, head: LedgerHead
    ) -> tuple[int, int] | None:
        if not token:
            return None

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
        position = payload.get("l")
        if (
            not isinstance(position, list)
            or len(position) != 2
            or not all(is_int(v) and 0 <= v <= 10**12 for v in position)
        ):
            raise invalid("malformed: not a ledger position (the server's listing changed?)")
        return int(position[0]), int(position[1])

    async def export_events(
        self, call: Call, request: service_pb2.ExportEventsRequest
    ) -> AsyncIterator[service_pb2.ExportEventsResponse]:
        """The tenant's events in ledger order from a cursor, with what the ledger recorded of
        each and the checkpoints inline; ends at the head as of the call."""
        check(validation.validate_export_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        sequencer, reader = self._ledger()
        tenant_id = request.tenant_id
        wanted = EntryFilter.of(request.filter)
        with database_failures(read=True):
            head = await sequencer.sequence(tenant_id)
            after = (
                self._decode_export_cursor(request.cursor, tenant_id)
                if request.cursor
                else max(request.from_sequence - 1, 0)
            )
            last = min(request.to_sequence or head.sequence, head.sequence)
            anchor = await sequencer.store.latest_anchor(tenant_id)
            first = max(after + 1, head.first)
            cursor_of = self._signer.encoder_of(EXPORT_CURSOR_PURPOSE, {"t": tenant_id}, "s")
            if anchor is not None and after < anchor.first_sequence:
                yield service_pb2.ExportEventsResponse(anchor=anchor, cursor=cursor_of(first - 1))
            checkpoints = await sequencer.store.checkpoints_between(tenant_id, first, last)

            everything = wanted.everything  # a comparison of dataclasses: not once per entry

            async def selected() -> AsyncIterator[Placed]:
                async for placed in reader.forward(tenant_id, first, last, head):
                    if everything or wanted.matches(placed.entry["x"]):
                        yield placed

            per_message = request.events_per_message
            batch = service_pb2.ExportEventsResponse()
            batch_bytes = 0
            async for fetched in reader.fetched(selected(), as_stored=True):
                for placed, doc in fetched:
                    cursor = cursor_of(placed.sequence)
                    call.events_returned += 1
                    if per_message <= 1:
                        single = service_pb2.ExportEventsResponse(cursor=cursor)
                        exported_event_into(placed, doc, single.event)
                        yield single
                    else:
                        # Built in place: appending a finished item copied it.
                        item = batch.batch.events.add()
                        exported_event_into(placed, doc, item)
                        item.cursor = batch.cursor = cursor
                        batch_bytes += item.ByteSize()
                        if (
                            len(batch.batch.events) >= per_message
                            or batch_bytes >= MAX_EXPORT_BATCH_BYTES
                            or (checkpoints and checkpoints[0].ledger_sequence <= placed.sequence)
                        ):
                            yield batch
                            batch, batch_bytes = service_pb2.ExportEventsResponse(), 0
                    while checkpoints and checkpoints[0].ledger_sequence <= placed.sequence:
                        yield service_pb2.ExportEventsResponse(
                            checkpoint=checkpoints.pop(0), cursor=cursor
                        )
                # A batch ends with each read of the ledger, so that a slow read never holds
                # back events already read.
                if batch.batch.events:
                    yield batch
                    batch, batch_bytes = service_pb2.ExportEventsResponse(), 0

    def _decode_export_cursor(self, cursor: str, tenant_id: str) -> int:
        try:
            payload = self._signer.decode(EXPORT_CURSOR_PURPOSE, cursor)
        except TokenError as exc:
            raise InvalidCursor(f"not an export cursor of this service ({exc})") from exc
        sequence = payload.get("s")
        if payload.get("t") != tenant_id:
            raise InvalidCursor("belongs to another tenant")
        if not is_int(sequence) or not 0 <= sequence <= 10**12:
            raise InvalidCursor("malformed: sequence out of range")
        return sequence

    async def get_checkpoint(
        self, call: Call, request: service_pb2.GetCheckpointRequest
    ) -> service_pb2.GetCheckpointResponse:
        check(validation.validate_tenant_request(request.tenant_id, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        sequencer, _ = self._ledger()
        with self._reading(call):
            head = await sequencer.sequence(request.tenant_id)
            checkpoint = await sequencer.store.latest_checkpoint(
                request.tenant_id, request.at_sequence
            )
            anchor = await sequencer.store.latest_anchor(request.tenant_id)
        response = service_pb2.GetCheckpointResponse(head_sequence=head.sequence)
        if checkpoint is not None:
            response.checkpoint.CopyFrom(checkpoint)
        if anchor is not None:
            response.anchor.CopyFrom(anchor)
        return response

    async def get_verification_keys(
        self, call: Call, request: service_pb2.GetVerificationKeysRequest
    ) -> service_pb2.GetVerificationKeysResponse:
        sequencer, _ = self._ledger()
        return service_pb2.GetVerificationKeysResponse(keys=sequencer.signer.verification_keys())

    async def verify_ledger(
        self, call: Call, request: service_pb2.VerifyLedgerRequest
    ) -> AsyncIterator[service_pb2.VerifyLedgerResponse]:
        """The client's verification, run here, plus what only the server can see: stored
        events that no ledger entry names."""
        check(validation.validate_tenant_request(request.tenant_id, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        sequencer, reader = self._ledger()
        tenant_id = request.tenant_id
        verifier = LedgerVerifier(tenant_id, VerificationKeys(sequencer.signer.verification_keys()))
        with database_failures(read=True):
            head = await sequencer.sequence(tenant_id)
            last = min(request.to_sequence or head.sequence, head.sequence)
            first = max(request.from_sequence, head.first, 1)
            anchor = await sequencer.store.latest_anchor(tenant_id)
            if anchor is not None and first == anchor.first_sequence:
                verifier.anchor(anchor)
            elif first > 1:
                # A range: start from the hash the ledger has before it.
                previous = await self._hash_before(tenant_id, first, head)
                verifier.start_at(first, previous)
            checkpoints = await sequencer.store.checkpoints_between(tenant_id, first, last)
            seen: set[str] = set()
            reported = 0

            def findings() -> list[service_pb2.VerifyLedgerResponse]:
                nonlocal reported
                new = verifier.report.findings[reported:]
                reported = len(verifier.report.findings)
                return [service_pb2.VerifyLedgerResponse(finding=f.to_proto()) for f in new]

            walk = reader.forward(tenant_id, first, last, head)
            async for fetched in reader.fetched(walk, as_stored=True):
                for placed, doc in fetched:
                    item = service_pb2.ExportedEvent()
                    exported_event_into(placed, doc, item)
                    seen.add(placed.entry["e"])
                    verifier.event(item)
                    while checkpoints and checkpoints[0].ledger_sequence <= placed.sequence:
                        verifier.checkpoint(checkpoints.pop(0))
                for response in findings():
                    yield response
                yield service_pb2.VerifyLedgerResponse(
                    progress=ledger_pb2.VerifyProgress(
                        verified_through=fetched[-1][0].sequence, last_sequence=last
                    )
                )
            latest = await sequencer.store.latest_checkpoint(tenant_id)
            verifier.finish(latest if request.to_sequence == 0 else None)
            if request.from_sequence == 0 and request.to_sequence == 0:
                async for finding in self._unledgered(tenant_id, seen):
                    verifier.report.findings.append(finding)
            for response in findings():
                yield response
        report = verifier.report
        yield service_pb2.VerifyLedgerResponse(
            summary=ledger_pb2.VerifySummary(
                first_sequence=report.first_sequence,
                last_sequence=report.last_sequence,
                events=report.events,
                checkpoints=report.checkpoints,
                findings=len(report.findings),
                start=report.start,
            )
        )

    async def _hash_before(self, tenant_id: str, first: int, head: LedgerHead) -> bytes:
        _, reader = self._ledger()
        async for placed in reader.forward(tenant_id, first - 1, first - 1, head):
            return bytes(placed.entry["h"])
        return genesis_hash(tenant_id)

    async def _unledgered(self, tenant_id: str, ledgered: set[str]) -> AsyncIterator[Finding]:
        """Stored events of the tenant that no ledger entry names, older than the ledger's lag
        (a scan of the tenant's events: VerifyLedger is an audit, not a hot path)."""
        settled = convert.now_millis() - dt.timedelta(seconds=60)
        cursor = self._repository.events.find(
            {"tenant_id": tenant_id, "receive_time": {"$lt": settled}},
            {"_id": 1, "id": 1},
        )
        async for doc in cursor:
            if doc["_id"] not in ledgered:
                yield Finding(
                    ledger_pb2.LEDGER_FINDING_KIND_EVENT_INSERTED,
                    0,
                    event_id=doc["id"],
                    detail=f"event {doc['id']} is stored but no ledger entry names it",
                )

    async def set_retention(
        self, call: Call, request: service_pb2.SetRetentionRequest
    ) -> service_pb2.SetRetentionResponse:
        check(validation.validate_retention_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        sequencer, _ = self._ledger()
        seconds = request.retention.ToTimedelta().total_seconds()
        with database_failures(read=False):
            await sequencer.store.ledger.replace_one(
                {"_id": retention_id(request.tenant_id)},
                {"_id": retention_id(request.tenant_id), "seconds": seconds},
                upsert=True,
            )
        return service_pb2.SetRetentionResponse(retention=request.retention)

    async def get_retention(
        self, call: Call, request: service_pb2.GetRetentionRequest
    ) -> service_pb2.GetRetentionResponse:
        check(validation.validate_tenant_request(request.tenant_id, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        sequencer, _ = self._ledger()
        with self._reading(call):
            seconds = await retention_seconds(
                sequencer.store, request.tenant_id, self._default_retention_days
            )
            anchor = await sequencer.store.latest_anchor(request.tenant_id)
        response = service_pb2.GetRetentionResponse()
        response.retention.FromTimedelta(dt.timedelta(seconds=seconds))
        if anchor is not None:
            response.anchor.CopyFrom(anchor)
        return response

    async def tail_events(
        self, call: Call, request: service_pb2.TailEventsRequest
    ) -> AsyncIterator[service_pb2.TailEventsResponse]:
        """The tenant's ledger, replayed then live (see LedgerWatches)."""
        check(validation.validate_tail_events_request(request, self._limits))
        self._guard.require_tenant(call, request.tenant_id)
        watches = self.ledger_watches
        if watches is None:
            raise DatabaseUnavailable("the ledger is not running on this server", writing=False)
        self._guard.open_tail(request.tenant_id)
        cursor = request.cursor if request.WhichOneof("start") == "cursor" else ""
        try:
            with database_failures(read=True):
                async for response in watches.tail(
                    request, self._reader, expires_at=call.principal.expires_at
                ):
                    call.events_returned += len(response.events.events)
                    yield response
                    cursor = response.cursor
        except AuditLogError as error:
            if cursor:
                error.metadata.setdefault("cursor", cursor)
            raise
        finally:
            self._guard.close_tail(request.tenant_id)
