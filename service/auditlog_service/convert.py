"""Conversion between AuditEvent messages and MongoDB documents (pure functions, no I/O).

A document mirrors the proto: snake_case common fields, the seed type string, the co-browsing
context, and the payload under its oneof field name with typed fields. Times are BSON dates, so
they carry milliseconds; events are normalised to millisecond precision on the way in so that the
event returned to the client equals what a later read returns. Free-form Struct/Value data is
stored as canonical JSON text, because MongoDB-compatible servers differ in which keys ("$x",
"a.b") they accept in sub-documents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import keyword
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from google.protobuf import descriptor, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from auditlog.v1 import audit_event_pb2, enums_pb2

from . import _native
from .event_types import REGISTRY, EventTypeSpec

Document = dict[str, Any]

SEQUENCE_DIGITS = 12
ACTOR_NAMES = {enums_pb2.ACTOR_AGENT: "AGENT", enums_pb2.ACTOR_CUSTOMER: "CUSTOMER"}
ACTOR_VALUES = {name: value for value, name in ACTOR_NAMES.items()}
INPUT_MASK = "********"

_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_FREE_FORM = {struct_pb2.Struct.DESCRIPTOR.full_name, struct_pb2.Value.DESCRIPTOR.full_name}
_FD = descriptor.FieldDescriptor


def event_key(tenant_id: str, event_id: str) -> str:
    """The tenant-scoped idempotency key; also the `_id` of a general event."""
    return f"{tenant_id}/{event_id}"


def serialized_events(events: Iterable[audit_event_pb2.AuditEvent]) -> list[bytes]:
    """Each event's serialization (by map: a list comprehension cost 0.15 us an event more)."""
    return list(map(audit_event_pb2.AuditEvent.SerializeToString, events))


def session_prefix(tenant_id: str, session_id: str) -> str:
    return f"{tenant_id}/{session_id}/"


def slot_ids(tenant_id: str, session_id: str, first: int, count: int) -> list[str]:
    """slot_id of `count` consecutive slots of a session from `first`, made together."""
    prefix = session_prefix(tenant_id, session_id)
    return [f"{prefix}{sequence:0{SEQUENCE_DIGITS}d}" for sequence in range(first, first + count)]


def session_key(doc: Document) -> tuple[str, str] | None:
    """A co-browsing event's (tenant, session), from its document; None for a general event."""
    cobrowse = doc.get("cobrowse")
    return None if cobrowse is None else (doc["tenant_id"], cobrowse["session_id"])


def slot_id(tenant_id: str, session_id: str, sequence: int) -> str:
    """The `_id` of a co-browsing event: its slot in the session, zero-padded so ids sort."""
    return slot_ids(tenant_id, session_id, sequence, 1)[0]


# Varints of one byte, made once: most lengths and tags on the write path are below 128.
_ONE_BYTE_VARINTS = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_WIRE_TYPES = {
    **dict.fromkeys((_FD.TYPE_MESSAGE, _FD.TYPE_STRING, _FD.TYPE_BYTES), 2),
    **dict.fromkeys((_FD.TYPE_BOOL, _FD.TYPE_ENUM, _FD.TYPE_INT32, _FD.TYPE_INT64), 0),
}


def field_tag(message_class: type[Message], name: str) -> bytes:
    """The serialized tag of a message's field (a length-delimited or a varint field)."""
    field = message_class.DESCRIPTOR.fields_by_name[name]
    return varint(field.number << 3 | _WIRE_TYPES[field.type])


def require_field_order(message_class: type[Message], *groups: str | list[str]) -> None:
    """ImportError unless every field of each group (a name, or a list of names) has a lower
    number than every field of the next group: code that writes or cuts serialized bytes by
    position relies on a serialization being in field-number order."""
    fields = message_class.DESCRIPTOR.fields_by_name
    spans = [
        [fields[name].number for name in ([group] if isinstance(group, str) else group)]
        for group in groups
    ]
    if any(max(before) >= min(after) for before, after in itertools.pairwise(spans)):
        names = ", ".join(str(group) for group in groups)
        name = message_class.DESCRIPTOR.name
        raise ImportError(f"{name}'s fields are not in the order {names}")


def message_field(tag: bytes, serialized: bytes) -> bytes:
    """A serialized message (or string) as a field of the message that holds it."""
    return tag + varint(len(serialized)) + serialized


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_MILLISECOND = dt.timedelta(milliseconds=1)


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return millis_to_datetime(ts.seconds * 1000 + ts.nanos // 1_000_000)


def millis_to_datetime(millis: int) -> dt.datetime:
    """The aware datetime a payload's time is stored as, from its milliseconds."""
    return _EPOCH + dt.timedelta(milliseconds=millis)


# An event's occur and receive times in the documents being stored are DatetimeMS, a count of
# milliseconds that BSON writes as the same date a datetime makes (what is read back is a
# datetime as before). Made from the Timestamp or the clock, one costs 0.3-0.5 us against
# 1.0-1.4 for a datetime, BSON encodes it about 0.25 us quicker than an aware datetime, and
# its milliseconds are read back in 0.15 against 0.4 us.
StoredTime = DatetimeMS


def stored_time(ts: timestamp_pb2.Timestamp) -> StoredTime:
    """A Timestamp's whole milliseconds, as a document being stored holds an event's time."""
    return DatetimeMS(ts.seconds * 1000 + ts.nanos // 1_000_000)


def stored_time_now() -> StoredTime:
    """now_millis as a document being stored holds an event's receive time."""
    return DatetimeMS(time.time_ns() // 1_000_000)


def datetime_to_millis(value: dt.datetime | DatetimeMS) -> int:
    """Milliseconds since 1970, rounded down (UTC when naive: what bulk reads decode dates to,
    see ledger_reads; DatetimeMS, which they decoded to before)."""
    if isinstance(value, DatetimeMS):
        return int(value)
    # One subtraction and one division of timedeltas, both in C, exact for every date: 200 ns
    # here, less than timestamp() (240 ns), which a cache of recent values had to help.
    return (value - (_EPOCH_NAIVE if value.tzinfo is None else _EPOCH)) // _MILLISECOND


def datetime_to_timestamp(value: dt.datetime | DatetimeMS, out: timestamp_pb2.Timestamp) -> None:
    out.seconds, rest = divmod(datetime_to_millis(value), 1000)
    out.nanos = rest * 1_000_000


class _RecentTime:
    """Conversions of a time with the last value's results kept: every event of a batch has one
    receive time (and an event without an occur time has it as that), so all but the first of a
    batch skip the conversion (a Timestamp: 0.17 against 0.57 us)."""

    def __init__(self) -> None:
        # Each a tuple with its value, replaced whole: a reader never sees one value's figures
        # with another's. A kept reference: the identity cannot be reused meanwhile.
        self._parts: tuple[StoredTime | dt.datetime | None, int, int] = (None, 0, 0)
        self._fields: tuple[StoredTime | dt.datetime | None, bytes, bytes] = (None, b"", b"")

    def into(self, value: StoredTime | dt.datetime, out: timestamp_pb2.Timestamp) -> None:
        parts = self._parts
        if parts[0] is not value:
            seconds, rest = divmod(datetime_to_millis(value), 1000)
            parts = self._parts = (value, seconds, rest * 1_000_000)
        _, out.seconds, out.nanos = parts

    def fields(self, value: StoredTime | dt.datetime) -> tuple[bytes, bytes]:
        """The value as an AuditEvent's occur_time field and as its receive_time field,
        serialized (see recorded_event)."""
        last = self._fields
        if last[0] is not value:
            timestamp = timestamp_pb2.Timestamp()
            self.into(value, timestamp)
            serialized = timestamp.SerializeToString()
            last = self._fields = (
                value,
                message_field(_OCCUR_TIME_TAG, serialized),
                message_field(_RECEIVE_TIME_TAG, serialized),
            )
        return last[1], last[2]


_RECEIVE_TIMES = _RecentTime()


def receive_time_into(value: StoredTime | dt.datetime, out: timestamp_pb2.Timestamp) -> None:
    """datetime_to_timestamp of a stored event's receive time, quicker when it is the same
    object as the last one's (see _RecentTime)."""
    _RECEIVE_TIMES.into(value, out)


def now_millis() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _message_type(field: descriptor.FieldDescriptor) -> str:
    assert field.message_type is not None
    return str(field.message_type.full_name)


def _enum_type(field: descriptor.FieldDescriptor) -> descriptor.EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


# Field kinds, for _fill's plans.
_SCALAR, _SCALARS, _ENUM, _TIME, _FREE_FORM_JSON, _MESSAGE, _MESSAGES = range(7)


# A message's document is made by a function written for its type from its descriptor, once:
# one statement per field, where walking ListFields() and dispatching on each field's kind cost
# about three times as much (2.4 against 0.8 us for a payload of four strings). A document
# holds what ListFields() lists, in field-number order: scalars other than zero (-0.0 is not
# zero there), set messages and oneof members, non-empty lists.
_doc_functions: dict[str, Callable[[Message], Document]] = {}


def _doc_function(message_type: descriptor.Descriptor) -> Callable[[Message], Document]:
    """The function that makes the document of a message of `message_type`."""
    made = _doc_functions.get(message_type.full_name)
    if made is not None:
        return made
    env: dict[str, Any] = {
        "timestamp_to_datetime": timestamp_to_datetime,
        "free_form_json": free_form_json,
        "copysign": math.copysign,
    }
    lines = ["def to_doc(m):", "    d = {}"]
    for field in sorted(message_type.fields, key=lambda f: f.number):
        name, number = field.name, field.number
        if field.type == _FD.TYPE_MESSAGE and _message_type(field) == _TIMESTAMP:
            value = "timestamp_to_datetime({})"
        elif field.type == _FD.TYPE_MESSAGE and _message_type(field) in _FREE_FORM:
            value = "free_form_json({})"
        elif field.type == _FD.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.GetOptions().map_entry:
                raise TypeError(f"{field.full_name}: a map has no document form here")
            env[f"to_doc_{number}"] = _doc_function(field.message_type)
            value = f"to_doc_{number}({{}})"
        elif field.type == _FD.TYPE_ENUM:
            env[f"names_{number}"] = {v.number: v.name for v in _enum_type(field).values}
            value = f"names_{number}[{{}}]"
        else:
            value = "{}"
        # m.<name> unless the name is a Python keyword (protobuf allows "from" or "class").
        read = f"getattr(m, {name!r})" if keyword.iskeyword(name) else f"m.{name}"
        if field.is_repeated:
            each = value.format("item")
            listed = "list(v)" if each == "item" else f"[{each} for item in v]"
            lines += [f"    v = {read}", "    if v:", f"        d[{name!r}] = {listed}"]
        elif field.has_presence:  # messages, oneof members, optional scalars
            lines += [
                f"    if m.HasField({name!r}):",
                f"        d[{name!r}] = {value.format(read)}",
            ]
        else:
            test = "v"
            if field.type in _DOUBLE_TYPES:
                test = "v or copysign(1.0, v) < 0"  # -0.0 is falsy, yet listed
            lines += [
                f"    v = {read}",
                f"    if {test}:",
                f"        d[{name!r}] = {value.format('v')}",
            ]
    lines.append("    return d")
    exec("\n".join(lines), env)  # source written above from the contract's descriptors
    function: Callable[[Message], Document] = env["to_doc"]
    _doc_functions[message_type.full_name] = function
    return function


# Per message type, per field name: (kind, the enum's numbers by name or the sub-message type).
_Plan = dict[str, tuple[int, Any]]
_reading_plans: dict[str, _Plan] = {}


def _reading_plan(message_type: descriptor.Descriptor) -> _Plan:
    """What _fill does with each field of a message type, from its descriptor once (walking the
    descriptor for every field of every event read was half of from_document's time)."""
    plan = _reading_plans.get(message_type.full_name)
    if plan is not None:
        return plan
    plan = {}
    for field in message_type.fields:
        if field.type == _FD.TYPE_MESSAGE:
            name = _message_type(field)
            if name == _TIMESTAMP:
                plan[field.name] = (_TIME, None)
            elif name in _FREE_FORM:
                plan[field.name] = (_FREE_FORM_JSON, None)
            else:
                kind = _MESSAGES if field.is_repeated else _MESSAGE
                plan[field.name] = (kind, field.message_type)  # its plan is made when needed
        elif field.type == _FD.TYPE_ENUM:
            numbers = {value.name: value.number for value in _enum_type(field).values}
            plan[field.name] = (_ENUM, numbers)
        else:
            plan[field.name] = (_SCALARS if field.is_repeated else _SCALAR, None)
    _reading_plans[message_type.full_name] = plan
    return plan


def _fill(doc: Document, message: Message, plan: _Plan) -> None:
    for key, value in doc.items():
        step = plan.get(key)
        if step is None:
            continue  # a field of a newer contract version; old readers skip it
        kind, detail = step
        if kind == _SCALAR:
            setattr(message, key, value)
        elif kind == _ENUM:
            number = detail.get(value)
            if number is not None:  # a value of a newer contract version: left unset
                setattr(message, key, number)
        elif kind == _TIME:
            datetime_to_timestamp(value, getattr(message, key))
        elif kind == _MESSAGE:
            target = getattr(message, key)
            target.SetInParent()
            _fill(value, target, _reading_plan(detail))
        elif kind == _SCALARS:
            getattr(message, key).extend(value)
        elif kind == _MESSAGES:
            target = getattr(message, key)
            item_plan = _reading_plan(detail)
            for item in value:
                _fill(item, target.add(), item_plan)
        else:
            json_format.Parse(value, getattr(message, key))


_DOUBLE_TYPES = (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT)
# What normalisation touches, per payload field: paths of (non-repeated) sub-messages ending in a
# field of one of these kinds. Built once from the descriptors, so prepare() walks no descriptor.
_Path = tuple[str, ...]


def _normalisation_paths(
    message: descriptor.Descriptor, prefix: _Path = ()
) -> dict[str, list[_Path]]:
    found: dict[str, list[_Path]] = {"timestamp": [], "double": [], "free_form": []}
    for field in message.fields:
        path = (*prefix, field.name)
        if field.type in _DOUBLE_TYPES and not field.is_repeated:
            found["double"].append(path)
        elif field.type != _FD.TYPE_MESSAGE or field.is_repeated:
            continue
        elif _message_type(field) == _TIMESTAMP:
            found["timestamp"].append(path)
        elif _message_type(field) in _FREE_FORM:
            found["free_form"].append(path)
        else:
            assert field.message_type is not None
            for kind, paths in _normalisation_paths(field.message_type, path).items():
                found[kind].extend(paths)
    return found


def _payload_type(payload_field: str) -> descriptor.Descriptor:
    message_type = audit_event_pb2.AuditEvent.DESCRIPTOR.fields_by_name[payload_field].message_type
    assert message_type is not None
    return message_type


def _paths_to_normalise(payload_field: str) -> dict[str, list[_Path]] | None:
    """The paths prepare() normalises in a payload; None when there are none (most payloads:
    prepare then skips its three loops at once)."""
    paths = _normalisation_paths(_payload_type(payload_field), (payload_field,))
    return paths if any(paths.values()) else None


_PAYLOAD_PATHS = {
    spec.payload_field: _paths_to_normalise(spec.payload_field) for spec in REGISTRY.all()
}


# The fields several payloads share that a document carries at its top (so that one index
# serves each filter), per payload field: the ones its message has. Asking a payload for a field
# it lacks (getattr with a default) raised and caught an AttributeError, 0.7 us each time.
_LIFTED_FIELDS = {
    spec.payload_field: tuple(
        name
        for name in ("customer_id", "call_id")
        if name in _payload_type(spec.payload_field).fields_by_name
    )
    for spec in REGISTRY.all()
}


def _present(root: Message, path: _Path) -> Message | None:
    """The message at `path` when every step of it is set, else None (nothing is created)."""
    node = root
    for name in path:
        if not node.HasField(name):
            return None
        node = getattr(node, name)
    return node


def _truncate_to_millis(ts: timestamp_pb2.Timestamp) -> None:
    ts.nanos -= ts.nanos % 1_000_000


def free_form_json(value: Message) -> str:
    """The canonical JSON text a Struct or Value is stored as."""
    return json.dumps(json_format.MessageToDict(value), sort_keys=True, separators=(",", ":"))


def _normalise_payload(event: audit_event_pb2.AuditEvent, paths: dict[str, list[_Path]]) -> None:
    """The payload's times truncated, -0.0 made 0.0 and free-form data as it reads back."""
    for path in paths["timestamp"]:
        ts = _present(event, path)
        if ts is not None:
            _truncate_to_millis(ts)  # type: ignore[arg-type]
    for path in paths["double"]:
        parent = _present(event, path[:-1])
        # BSON keeps -0.0, but not every server does (FerretDB reads back 0.0).
        if parent is not None and getattr(parent, path[-1]) == 0.0:
            setattr(parent, path[-1], 0.0)
    for path in paths["free_form"]:
        value = _present(event, path)
        if value is not None:
            # A Value without a kind reads back as null_value, as in the JSON mapping.
            json_format.Parse(free_form_json(value), value)


# The payload whose text may be sensitive (EventPreparer.prepare masks it, and sets `masked`;
# the native preparer does the same).
_MASKED_PAYLOAD = "input"
# Payloads naming the co-browsing session they are about, by the field naming it: a document's
# `session_id` is that session (to_document).
_SESSION_FIELDS = {"live_view": "cobrowse_session_id"}

# Each payload's document function, made at start-up.
_PAYLOAD_DOCS = {
    spec.payload_field: _doc_function(_payload_type(spec.payload_field)) for spec in REGISTRY.all()
}


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (0.5 against
# 0.15 us to make one), and one is made per event ingested.
@dataclass(slots=True)
class PreparedEvent:
    """An incoming event exactly as it will be stored, and its idempotency fingerprint.

    `event` has output-only fields cleared, unknown fields dropped, times truncated to
    milliseconds, -0.0 as 0.0, free-form data as it reads back from its JSON, and sensitive
    input masked. Its `occur_time` is set only when the client set it.
    """

    event: audit_event_pb2.AuditEvent
    spec: EventTypeSpec
    fingerprint: str
    # The serialization the fingerprint hashes (the event without id and occur_time), where
    # in it the fields after tenant_user_id start, and the occur_time field as serialized when
    # the client gave one (else empty: a set Timestamp is at least its tag and length): what
    # recorded_event puts together.
    content: bytes
    content_split: int
    occur_field: bytes

    @property
    def occur_time_given(self) -> bool:
        return bool(self.occur_field)


class EventPreparer:
    """Normalises incoming events to what is stored and fingerprints them (see AuditEvent.id).

    The fingerprint is SHA-256 over the deterministic serialization of the event as stored with
    id, occur_time and the output-only fields cleared, followed, for a masked INPUT, by
    HMAC-SHA256(server key, original text): two different secrets under one id conflict, yet
    nothing stored can be brute-forced back to the secret without the server's key. occur_time
    is compared on its own: a retry without one matches any stored time.
    """

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"auditlog input fingerprint\0" + secret.encode()).digest()

    def native(self) -> _native.Preparer:
        """A native preparer preparing events as this one does (see native_preparer)."""
        return native_preparer(self._key)

    def prepare(
        self, incoming: audit_event_pb2.AuditEvent, *, owned: bool = False
    ) -> PreparedEvent:
        """`incoming` normalised; an `owned` message (nobody reads it afterwards) is normalised
        in place rather than copied."""
        event = incoming
        if not owned:
            event = audit_event_pb2.AuditEvent()
            event.CopyFrom(incoming)
        # What the server does not know it cannot store, so it must not count either.
        event.DiscardUnknownFields()
        event.ClearField("receive_time")
        # Scalars are read before they are cleared: a read is a third of a ClearField call, and
        # clients rarely set output-only fields.
        if event.event_type:
            event.ClearField("event_type")
        if event.sequence:
            event.ClearField("sequence")
        if event.ledger_sequence:
            event.ClearField("ledger_sequence")
        if event.ledger_hash:
            event.ClearField("ledger_hash")
        spec = REGISTRY.of_event(event)
        if spec is None:
            raise ValueError("event has no payload")
        given = event.HasField("occur_time")
        if given:
            _truncate_to_millis(event.occur_time)
        paths = _PAYLOAD_PATHS[spec.payload_field]
        if paths is not None:
            _normalise_payload(event, paths)
        secret_digest = b""
        if spec.payload_field == _MASKED_PAYLOAD:
            event.input.masked = event.input.sensitive
            if event.input.sensitive:
                secret_digest = hmac.new(
                    self._key, event.input.text.encode(), hashlib.sha256
                ).digest()
                event.input.text = INPUT_MASK
        fingerprint, content, split, occur_field = self._fingerprint(
            event, secret_digest, given, spec.map_free
        )
        return PreparedEvent(event, spec, fingerprint, content, split, occur_field)

    @staticmethod
    def _fingerprint(
        event: audit_event_pb2.AuditEvent, secret_digest: bytes, given: bool, plain: bool
    ) -> tuple[str, bytes, int, bytes]:
        """The fingerprint; the serialization it hashes (the event without id and occur_time)
        and where in it the fields after tenant_user_id start; the occur_time field serialized
        (empty when not `given`). `plain`: the event can hold no map (see
        EventTypeSpec.map_free)."""
        # The event is serialized as it is, and id and occur_time are cut out of the bytes: a
        # serialization is in field-number order, so id comes first and occur_time right after
        # tenant_id and tenant_user_id. Taking them out of the message and putting them back
        # cost 3.3 against 1.9 us (in a slow hour) for an event with an occur_time: a message
        # read, cleared and rebuilt.
        whole = event.SerializeToString() if plain else event.SerializeToString(deterministic=True)
        start = _string_size(event.id)
        split = _string_size(event.tenant_id) + _string_size(event.tenant_user_id)
        end = start + split
        occur_field = b""
        if given:
            # A Timestamp's serialization is at most 17 bytes: its length is one byte.
            occur_end = end + 2 + whole[end + 1]
            occur_field = whole[end:occur_end]
            content = whole[start:end] + whole[occur_end:]
        else:
            content = whole[start:]
        digest = hashlib.sha256(content)
        if secret_digest:
            digest.update(secret_digest)
        return digest.hexdigest(), content, split, occur_field


# recorded_event serializes the fields the server assigns itself and puts them where a
# serialization of the stored event has them, which is in field-number order: id, then the
# content's tenant_id and tenant_user_id, then occur_time, receive_time and event_type, then the
# rest of the content (cobrowse, the payload).
_EVENT_FIELDS = [field.name for field in audit_event_pb2.AuditEvent.DESCRIPTOR.fields]
_FIRST_FIELDS = ("id", "tenant_id", "tenant_user_id", "occur_time", "receive_time", "event_type")
require_field_order(
    audit_event_pb2.AuditEvent,
    *_FIRST_FIELDS,
    [name for name in _EVENT_FIELDS if name not in _FIRST_FIELDS],
)
# A session's sequence goes between the cobrowse context and the payload (stored_event_bytes).
require_field_order(
    audit_event_pb2.AuditEvent,
    "cobrowse",
    "sequence",
    [
        field.name
        for field in audit_event_pb2.AuditEvent.DESCRIPTOR.oneofs_by_name["payload"].fields
    ],
)
_ID_TAG = field_tag(audit_event_pb2.AuditEvent, "id")
_OCCUR_TIME_TAG = field_tag(audit_event_pb2.AuditEvent, "occur_time")
_RECEIVE_TIME_TAG = field_tag(audit_event_pb2.AuditEvent, "receive_time")
_EVENT_TYPE_FIELDS = {
    spec.payload_field: field_tag(audit_event_pb2.AuditEvent, "event_type")
    + varint(spec.event_type)
    for spec in REGISTRY.all()
}
SEQUENCE_TAG = field_tag(audit_event_pb2.AuditEvent, "sequence")
_COBROWSE_TAG = field_tag(audit_event_pb2.AuditEvent, "cobrowse")


def _string_size(text: str) -> int:
    """What a set string field (of a number below 16) takes in a serialization; 0 when empty."""
    size = len(text) if text.isascii() else len(text.encode())
    return size and 1 + (1 if size < 0x80 else len(varint(size))) + size


def sequence_position(prepared: PreparedEvent, recorded: bytes) -> int:
    """Where a session sequence goes in the recorded form of a co-browsing event: right after
    its cobrowse context, which is the first field of the content's rest (0 for other events,
    which have no sequence)."""
    if not prepared.spec.cobrowse:
        return 0
    content, split = prepared.content, prepared.content_split
    at = len(recorded) - (len(content) - split)
    if recorded[at : at + 1] != _COBROWSE_TAG:  # validation requires the context: a bug
        raise ValueError("a co-browsing event without its cobrowse context")
    at += 1  # the tag is one byte; the context's length follows
    length, shift = 0, 0
    while True:
        byte = recorded[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return at + length


def stored_event_bytes(recorded: bytes, position: int, sequence: int) -> bytes:
    """The serialization of the event as stored: its recorded form and, for a co-browsing event,
    its session sequence where field-number order puts it (sequence_position)."""
    if not sequence:
        return recorded
    return b"".join((recorded[:position], SEQUENCE_TAG, varint(sequence), recorded[position:]))


def recorded_event(
    prepared: PreparedEvent, *, event_id: str, receive_time: StoredTime | dt.datetime
) -> bytes:
    """The recorded form (auditlog.ledger.recorded_form) of the event as stored, put together
    from the prepared event's content and the fields the server assigns: byte for byte what
    serializing the stored event gives, without building it (bench.event_cost: 1.0 against
    2.1 us a general event in runs of the same hour): the ledger records it, and a response's
    event parses from it."""
    occur_of_receive, receive_field = _RECEIVE_TIMES.fields(receive_time)
    occur_field = prepared.occur_field or occur_of_receive  # the server's time when none given
    content, split = prepared.content, prepared.content_split
    id_field = message_field(_ID_TAG, event_id.encode()) if event_id else b""
    return b"".join(
        (
            id_field,
            content[:split],
            occur_field,
            receive_field,
            _EVENT_TYPE_FIELDS[prepared.spec.payload_field],
            content[split:],
        )
    )


def to_document(
    prepared: PreparedEvent, *, event_id: str, receive_time: StoredTime | dt.datetime
) -> Document:
    """The document of a prepared event; `_id` and `sequence` of co-browsing events come later."""
    event, spec = prepared.event, prepared.spec
    payload_field = spec.payload_field
    payload = getattr(event, payload_field)
    # The prepared event says whether the client gave an occur time (prepare asked already).
    occur_time = stored_time(event.occur_time) if prepared.occur_field else receive_time
    tenant_id = event.tenant_id
    key = event_key(tenant_id, event_id)
    payload_doc = _PAYLOAD_DOCS[payload_field](payload)
    doc: Document = {
        "_id": key,
        "key": key,
        "id": event_id,
        "tenant_id": tenant_id,
        "type": spec.type_string,
        "occur_time": occur_time,
        "receive_time": receive_time,
        "fingerprint": prepared.fingerprint,
        payload_field: payload_doc,
    }
    tenant_user_id = event.tenant_user_id
    if tenant_user_id:
        doc["tenant_user_id"] = tenant_user_id
    session = ""
    if spec.cobrowse:
        cobrowse = event.cobrowse
        session = cobrowse.session_id
        doc["cobrowse"] = {"session_id": session, "actor": ACTOR_NAMES[cobrowse.actor]}
    # Read from the payload's document, which holds them when set: a dict lookup, not a
    # message's field.
    for name in _LIFTED_FIELDS[payload_field]:
        if name in payload_doc:
            doc[name] = payload_doc[name]
    session_field = _SESSION_FIELDS.get(payload_field)
    if session_field is not None:
        session = payload_doc.get(session_field, "")
    if session:
        doc["session_id"] = session
    return doc


# A document's BSON, to send as is: what PyMongo's encoder takes a RawBSONDocument for (it
# copies `raw` where the type marker says raw BSON), without RawBSONDocument's size check, codec
# options and mapping, which nothing here reads of a document being sent. Made once or twice an
# event on the write path, by the native calls that make its bytes: a Python class of
# `__slots__ = ("raw",)` (0.40 against RawBSONDocument's 1.07 us each in process) still cost
# a Python `__init__` call each. tests/unit/test_sent_document.py checks that PyMongo sends it
# byte for byte as a RawBSONDocument.
SentDocument = _native.SentDocument


def raw_document(body: bytes, doc: Document, body_keys: int) -> SentDocument | None:
    """`doc` in BSON, as PyMongo would encode it and inserts it without encoding it again: its
    first `body_keys` elements as the native preparer made them (EventWrite.body), with `_id`
    as it is now (a co-browsing event's slot), and those that storage added to the dict since
    (its outbox id; a co-browsing event's sequence and run end). None when an added value is of
    a type left to PyMongo, which then encodes the dict."""
    raw = _native.raw_document(body, doc, body_keys)
    return None if raw is None else SentDocument(raw)


def raw_documents(writes: list[Any], indexes: list[int]) -> dict[int, SentDocument]:
    """raw_document of each of the events `indexes` of `writes` (storage.EventWrite) that
    has a body (the native preparer made it), in one native call, by index (whole_document
    where raw_document leaves an addition to PyMongo); those without a body are not there."""
    return _native.raw_documents(writes, indexes, whole_document)


# Decoding a body for whole_document: its dates as they were encoded (milliseconds).
_AS_STORED: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)


def additions(write: Any) -> list[tuple[str, Any]]:
    """A storage.EventWrite's document's items after those its body holds: what storage added
    to it (the outbox id; a co-browsing event's sequence and run end)."""
    return list(write.doc.items())[write.body_keys :]


def whole_document(write: Any) -> SentDocument:
    """The document to send of a storage.EventWrite with a body whose additions raw_document
    leaves to PyMongo: the body's elements, `_id` as the document has it now and the rest of
    the document's items after them, as BSON. From the body, not the dict: the dict the
    writer's native preparer makes leaves out the payload (see EventWriter.prepare_batch)."""
    elements = write.body
    whole = bson.decode(
        (len(elements) + 5).to_bytes(4, "little") + elements + b"\0",
        codec_options=_AS_STORED,
    )
    whole["_id"] = write.doc["_id"]
    whole.update(additions(write))
    return SentDocument(bson.encode(whole))


def assign_slot(doc: Document, sequence: int, session: tuple[str, str] | None = None) -> None:
    """Place a co-browsing event's document in its session slot; `session` is its (tenant,
    session id), needed where the document leaves out its context (the writer's slim ones)."""
    tenant_id, session_id = session or (doc["tenant_id"], doc["cobrowse"]["session_id"])
    doc["_id"] = slot_id(tenant_id, session_id, sequence)
    doc["sequence"] = sequence


def id_claim(doc: Document) -> Document:
    """The claim of a co-browsing event's id: written just before its event, naming its slot.

    Generation 0 of the id's placement records (see storage._GroupWrite).
    """
    return {"_id": doc["key"], "slot": doc["_id"], "fingerprint": doc["fingerprint"], "gen": 0}


def slot_run(
    writes: list[Any], indexes: list[int], session: tuple[str, str], first: int
) -> list[tuple[int, str, Any]]:
    """The run of the events `indexes` of `writes` (storage.EventWrite), all of `session` and
    none with its id claimed yet, from slot `first` on, in one native call: each document
    assigned its slot (`_id`, `sequence`, and `run_end`, the run's last slot), each preceded by
    its id claim as a SentDocument, as (index, "claim", claim) and (index, "event", the
    document to send: as raw_documents makes it, or the dict of an event without a body).
    In a profile of co-browsing LogEvents, making the slot ids and claims in Python took 1.5 us
    an event of the server's CPU, and PyMongo's checks of the claims' dicts about 1.2."""
    return _native.slot_run(
        writes, indexes, session_prefix(*session), first, SEQUENCE_DIGITS, whole_document
    )


def placement_record_id(key: str, generation: int) -> str:
    """`<tenant>/<id>#<n>`: ids never contain "#", so this never names an event or claim."""
    return f"{key}#{generation}"


def placement_record(doc: Document, generation: int) -> Document:
    """Record n >= 1 of a co-browsing event's id: the slot it aims at after losing a race."""
    return {
        "_id": placement_record_id(doc["key"], generation),
        "slot": doc["_id"],
        "gen": generation,
    }


def from_document(doc: Document) -> audit_event_pb2.AuditEvent:
    event = audit_event_pb2.AuditEvent()
    document_into(doc, event)
    return event


def document_into(doc: Document, event: audit_event_pb2.AuditEvent) -> None:
    """from_document into an empty message, such as one added to a response in place (an export
    builds thousands a second: a copy of each into its response cost a third as much again)."""
    spec: EventTypeSpec = REGISTRY.by_type_string(doc["type"])
    event.id = doc["id"]
    event.tenant_id = doc["tenant_id"]
    event.tenant_user_id = doc.get("tenant_user_id", "")
    event.event_type = spec.event_type  # type: ignore[assignment]
    event.sequence = doc.get("sequence", 0)
    datetime_to_timestamp(doc["occur_time"], event.occur_time)
    datetime_to_timestamp(doc["receive_time"], event.receive_time)
    if "cobrowse" in doc:
        event.cobrowse.session_id = doc["cobrowse"]["session_id"]
        event.cobrowse.actor = ACTOR_VALUES[doc["cobrowse"]["actor"]]
    payload = getattr(event, spec.payload_field)
    payload.SetInParent()
    _fill(doc.get(spec.payload_field, {}), payload, _reading_plan(payload.DESCRIPTOR))


# The native preparer (service/native, built by `make setup`): EventPreparer.prepare,
# to_document, recorded_event and sequence_position in one pass over an event's serialization,
# for the events these rules would not change (it declines the others, which prepare as above).
# Its field kinds; a field of any other kind (free-form data, a map, bytes, a list of numbers,
# a scalar with presence) makes it decline an event that sets it.
_NATIVE_STRING, _NATIVE_BOOL, _NATIVE_ENUM, _NATIVE_DOUBLE, _NATIVE_MESSAGE, _NATIVE_TIME = range(6)
_NATIVE_DECLINED = 9


def _native_kind(field: descriptor.FieldDescriptor) -> int:
    if field.type == _FD.TYPE_STRING:
        return _NATIVE_STRING
    if field.type == _FD.TYPE_MESSAGE:
        assert field.message_type is not None
        if field.message_type.GetOptions().map_entry or _message_type(field) in _FREE_FORM:
            return _NATIVE_DECLINED
        if _message_type(field) == _TIMESTAMP:
            return _NATIVE_DECLINED if field.is_repeated else _NATIVE_TIME
        return _NATIVE_MESSAGE
    if field.is_repeated or field.has_presence:
        return _NATIVE_DECLINED
    kinds = {
        _FD.TYPE_BOOL: _NATIVE_BOOL,
        _FD.TYPE_ENUM: _NATIVE_ENUM,
        _FD.TYPE_DOUBLE: _NATIVE_DOUBLE,
    }
    return kinds.get(field.type, _NATIVE_DECLINED)


def native_preparer(input_key: bytes) -> _native.Preparer:
    """The native preparer, given the contract's messages and these rules' choices;
    `input_key` is the key of a masked input's secret digest (see EventPreparer)."""
    messages: list[list[tuple[int, str, int, bool, dict[int, str], int]]] = []
    indexes: dict[str, int] = {}

    def index_of(message_type: descriptor.Descriptor) -> int:
        if message_type.full_name in indexes:
            return indexes[message_type.full_name]
        index = indexes[message_type.full_name] = len(messages)
        rows: list[tuple[int, str, int, bool, dict[int, str], int]] = []
        messages.append(rows)
        for field in message_type.fields:
            kind = _native_kind(field)
            names = (
                {v.number: v.name for v in _enum_type(field).values} if kind == _NATIVE_ENUM else {}
            )
            inner = 0
            if kind == _NATIVE_MESSAGE:
                assert field.message_type is not None
                inner = index_of(field.message_type)
            rows.append((field.number, field.name, kind, field.is_repeated, names, inner))
        return index

    event = audit_event_pb2.AuditEvent.DESCRIPTOR
    payloads = {
        event.fields_by_name[spec.payload_field].number: (
            spec.payload_field,
            index_of(_payload_type(spec.payload_field)),
            spec.type_string,
            spec.event_type,
            spec.cobrowse,
            list(_LIFTED_FIELDS[spec.payload_field]),
            _SESSION_FIELDS.get(spec.payload_field),
        )
        for spec in REGISTRY.all()
    }
    numbers = {field.name: field.number for field in event.fields if field.containing_oneof is None}
    masked = _payload_type(_MASKED_PAYLOAD).fields_by_name
    masking = (
        event.fields_by_name[_MASKED_PAYLOAD].number,
        masked["text"].number,
        masked["sensitive"].number,
        masked["masked"].number,
        INPUT_MASK,
        input_key,
    )
    return _native.Preparer(
        messages,
        payloads,
        numbers,
        {int(value): name for value, name in ACTOR_NAMES.items()},
        DatetimeMS,
        millis_to_datetime,
        masking,
    )
