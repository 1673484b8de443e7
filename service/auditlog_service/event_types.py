"""The event-type registry: payload field <-> EventType <-> seed type string, from the contract."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor

from auditlog.v1 import audit_event_pb2, enums_pb2, options_pb2


@dataclass(frozen=True)
class EventTypeSpec:
    """Everything the service needs to know about one event type."""

    event_type: int  # enums_pb2.EventType value
    payload_field: str  # name of the AuditEvent.payload oneof field
    type_string: str  # seed type string stored in MongoDB, e.g. "START_CALL"
    display_name: str
    cobrowse: bool
    # Its events can hold no map at any depth (a Struct is one). Only maps make a message's
    # serialization depend on more than its content (their order), so these events serialize
    # deterministically without asking: SerializeToString(deterministic=True) costs 0.4
    # against 0.2 us, the keyword's parsing.
    map_free: bool


class EventTypeRegistry:
    """Lookups between the three names of an event type, built once from the descriptors.

    The payload field and the enum value are matched through the seed type string's spelling
    (START_CALL <-> start_call, PAGECHANGE <-> page_change), and the build fails loudly if the
    contract ever has a payload without an enum value or the other way round.
    """

    def __init__(self) -> None:
        by_type_string: dict[str, tuple[int, options_pb2.EventTypeInfo]] = {}
        for value in enums_pb2.EventType.DESCRIPTOR.values:
            if value.number == enums_pb2.EVENT_TYPE_UNSPECIFIED:
                continue
            info = value.GetOptions().Extensions[options_pb2.event_type_info]
            by_type_string[info.type_string] = (value.number, info)

        event = audit_event_pb2.AuditEvent.DESCRIPTOR
        oneof = event.oneofs_by_name["payload"]
        maps_outside = any(
            _may_hold_map(field) for field in event.fields if field.containing_oneof is not oneof
        )
        specs: list[EventTypeSpec] = []
        for field in oneof.fields:
            key = field.name.upper()
            if key not in by_type_string:
                # Two seed strings are spelled without the underscore of their payload field.
                key = key.replace("_", "")
            number, info = by_type_string.pop(key)
            specs.append(
                EventTypeSpec(
                    event_type=number,
                    payload_field=field.name,
                    type_string=info.type_string,
                    display_name=info.display_name,
                    cobrowse=info.category == options_pb2.EVENT_CATEGORY_COBROWSE,
                    map_free=not maps_outside and not _may_hold_map(field),
                )
            )
        if by_type_string:
            raise RuntimeError(f"event types without a payload: {sorted(by_type_string)}")
        self._by_field = {s.payload_field: s for s in specs}
        self._by_type = {s.event_type: s for s in specs}
        self._by_string = {s.type_string: s for s in specs}

    def all(self) -> list[EventTypeSpec]:
        return list(self._by_field.values())

    def by_payload_field(self, field: str) -> EventTypeSpec:
        return self._by_field[field]

    def by_event_type(self, event_type: int) -> EventTypeSpec:
        return self._by_type[event_type]

    def by_type_string(self, type_string: str) -> EventTypeSpec:
        return self._by_string[type_string]

    def of_event(self, event: audit_event_pb2.AuditEvent) -> EventTypeSpec | None:
        field = event.WhichOneof("payload")
        return None if field is None else self._by_field[field]


def _may_hold_map(field: descriptor.FieldDescriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a field is a map or a message that can hold one at any depth."""
    message = field.message_type
    if message is None or message.full_name in seen:
        return False
    if message.GetOptions().map_entry:
        return True
    seen = seen | {message.full_name}
    return any(_may_hold_map(inner, seen) for inner in message.fields)


REGISTRY = EventTypeRegistry()
