"""Building AuditEvents and filters: payload message -> oneof field, times, actors, event types.

The mapping from a payload message type (``StartCallAttributes``, ``ClickAttributes``, ...) to its
``AuditEvent.payload`` oneof field, and whether it is a co-browsing event, is read from the
contract's descriptors, so a new event type in ``proto/`` needs no change here.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from auditlog.v1 import audit_event_pb2, enums_pb2, options_pb2, service_pb2

AuditEvent = audit_event_pb2.AuditEvent
EventTypeValue: TypeAlias = enums_pb2.EventType.ValueType
ActorValue: TypeAlias = enums_pb2.Actor.ValueType
TimeLike: TypeAlias = dt.datetime | timestamp_pb2.Timestamp


@dataclass(frozen=True)
class PayloadSpec:
    """Where a payload message type goes in AuditEvent, and what it is."""

    field: str  # the AuditEvent.payload oneof field, e.g. "start_call"
    event_type: EventTypeValue  # e.g. EVENT_TYPE_START_CALL
    type_string: str  # the seed type string, e.g. "START_CALL"
    cobrowse: bool  # a co-browsing session event (needs session id and actor)


def _payload_specs() -> dict[str, PayloadSpec]:
    by_type_string: dict[str, tuple[EventTypeValue, options_pb2.EventTypeInfo]] = {}
    for value in enums_pb2.EventType.DESCRIPTOR.values:
        if value.number == enums_pb2.EVENT_TYPE_UNSPECIFIED:
            continue
        info = value.GetOptions().Extensions[options_pb2.event_type_info]
        by_type_string[info.type_string] = (enums_pb2.EventType.Value(value.name), info)
    specs: dict[str, PayloadSpec] = {}
    for field in AuditEvent.DESCRIPTOR.oneofs_by_name["payload"].fields:
        # The seed string is the field name in upper case, for two of them without underscores.
        key = field.name.upper()
        if key not in by_type_string:
            key = key.replace("_", "")
        event_type, info = by_type_string[key]
        assert field.message_type is not None  # every payload is a message
        specs[field.message_type.full_name] = PayloadSpec(
            field=field.name,
            event_type=event_type,
            type_string=info.type_string,
            cobrowse=info.category == options_pb2.EVENT_CATEGORY_COBROWSE,
        )
    return specs


PAYLOADS: dict[str, PayloadSpec] = _payload_specs()
"""Payload message full name (``auditlog.v1.StartCallAttributes``) -> its PayloadSpec."""

_EVENT_TYPES_BY_STRING = {spec.type_string: spec.event_type for spec in PAYLOADS.values()}


def payload_spec(payload: Message) -> PayloadSpec:
    """The oneof field and event type of a payload message.

    >>> from auditlog.v1 import payloads_pb2
    >>> payload_spec(payloads_pb2.ClickAttributes()).field
    'click'
    """
    spec = PAYLOADS.get(payload.DESCRIPTOR.full_name)
    if spec is None:
        raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an AuditEvent payload message")
    return spec


def to_timestamp(value: TimeLike) -> timestamp_pb2.Timestamp:
    """A Timestamp from an aware datetime (naive ones are refused: whose local time?)."""
    if isinstance(value, timestamp_pb2.Timestamp):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: give it a timezone, e.g. datetime.UTC")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def now_timestamp() -> timestamp_pb2.Timestamp:
    """The current time as a Timestamp, in whole milliseconds (what the database keeps)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(time.time_ns() // 1_000_000)
    return stamp


def to_actor(actor: ActorValue | str) -> ActorValue:
    """An Actor value from itself, "agent"/"customer" or "ACTOR_AGENT"/"ACTOR_CUSTOMER"."""
    if isinstance(actor, str):
        name = actor.upper()
        name = name if name.startswith("ACTOR_") else f"ACTOR_{name}"
        try:
            value = enums_pb2.Actor.Value(name)
        except ValueError:
            raise ValueError(f"unknown actor {actor!r}: use 'agent' or 'customer'") from None
    else:
        value = actor
    if value == enums_pb2.ACTOR_UNSPECIFIED:
        raise ValueError("a co-browsing event needs an actor: 'agent' or 'customer'")
    return value


def to_event_type(event_type: EventTypeValue | str) -> EventTypeValue:
    """An EventType value from itself, a seed type string ("START_CALL") or an enum name."""
    if not isinstance(event_type, str):
        return event_type
    if event_type in _EVENT_TYPES_BY_STRING:
        return _EVENT_TYPES_BY_STRING[event_type]
    try:
        return enums_pb2.EventType.Value(event_type)
    except ValueError:
        raise ValueError(f"unknown event type {event_type!r}") from None


def _envelope(
    tenant_id: str,
    payload: Message,
    spec: PayloadSpec,
    occur_time: TimeLike | None,
    event_id: str | None,
) -> AuditEvent:
    event = AuditEvent(tenant_id=tenant_id, id=event_id or "")
    if occur_time is not None:
        event.occur_time.CopyFrom(to_timestamp(occur_time))
    field = getattr(event, spec.field)
    field.SetInParent()  # so that an empty payload (LoggedInAttributes()) still selects the oneof
    field.MergeFrom(payload)
    return event


def general_event(
    tenant_id: str,
    tenant_user_id: str,
    payload: Message,
    *,
    occur_time: TimeLike | None = None,
    id: str | None = None,
) -> AuditEvent:
    """A general platform event (START_CALL, LOGGED_IN, ...), its payload in the right field.

    >>> from auditlog.v1 import payloads_pb2
    >>> event = general_event(
    ...     "acme", "agent-7", payloads_pb2.StartCallAttributes(call_id="c-1", customer_id="k-9")
    ... )
    >>> event.WhichOneof("payload")
    'start_call'
    """
    spec = payload_spec(payload)
    if spec.cobrowse:
        raise TypeError(f"{spec.type_string} is a co-browsing event: use cobrowse_event()")
    event = _envelope(tenant_id, payload, spec, occur_time, id)
    event.tenant_user_id = tenant_user_id
    return event


def cobrowse_event(
    tenant_id: str,
    session_id: str,
    actor: ActorValue | str,
    payload: Message,
    *,
    tenant_user_id: str = "",
    occur_time: TimeLike | None = None,
    id: str | None = None,
) -> AuditEvent:
    """A co-browsing session event (CLICK, SCROLL, ...) of `session_id`, done by `actor`.

    >>> from auditlog.v1 import payloads_pb2
    >>> event = cobrowse_event(
    ...     "acme", "cob-1", "customer", payloads_pb2.ClickAttributes(
    ...         element=payloads_pb2.Element(name="Buy now", id="buy"))
    ... )
    >>> event.WhichOneof("payload"), event.cobrowse.session_id
    ('click', 'cob-1')
    """
    spec = payload_spec(payload)
    if not spec.cobrowse:
        raise TypeError(f"{spec.type_string} is a general event: use general_event()")
    event = _envelope(tenant_id, payload, spec, occur_time, id)
    event.tenant_user_id = tenant_user_id
    event.cobrowse.session_id = session_id
    event.cobrowse.actor = to_actor(actor)
    return event


def event_filter(
    base: service_pb2.EventFilter | None = None,
    *,
    event_types: Iterable[EventTypeValue | str] = (),
    tenant_user_id: str = "",
    customer_id: str = "",
    call_id: str = "",
    cobrowse_session_id: str = "",
    actor: ActorValue | str | None = None,
    start_time: TimeLike | None = None,
    end_time: TimeLike | None = None,
) -> service_pb2.EventFilter:
    """An EventFilter from keywords, added to a copy of `base` (a field set in both is an error).

    >>> event_filter(event_types=["START_CALL"], customer_id="k-9").customer_id
    'k-9'
    """
    result = service_pb2.EventFilter()
    if base is not None:
        result.CopyFrom(base)

    def claim(field: str) -> None:
        if getattr(result, field):
            raise ValueError(f"{field} is set both in filter= and as a keyword")

    for field, value in (
        ("tenant_user_id", tenant_user_id),
        ("customer_id", customer_id),
        ("call_id", call_id),
        ("cobrowse_session_id", cobrowse_session_id),
    ):
        if value:
            claim(field)
            setattr(result, field, value)
    types = [to_event_type(t) for t in event_types]
    if types:
        claim("event_types")
        result.event_types.extend(types)
    if actor is not None:
        claim("actor")
        result.actor = to_actor(actor)
    if start_time is not None:
        if result.HasField("start_time"):
            raise ValueError("start_time is set both in filter= and as a keyword")
        result.start_time.CopyFrom(to_timestamp(start_time))
    if end_time is not None:
        if result.HasField("end_time"):
            raise ValueError("end_time is set both in filter= and as a keyword")
        result.end_time.CopyFrom(to_timestamp(end_time))
    return result
