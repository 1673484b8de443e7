"""Request validation: pure checks that return every field violation of a request, in order."""

import itertools
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2

from . import _native


@dataclass(frozen=True)
class Limits:
    """Size limits of requests; the service builds one from its settings."""

    max_id_length: int = 128
    max_text_length: int = 65536
    max_struct_bytes: int = 65536
    max_list_items: int = 1000
    max_event_bytes: int = 262144
    max_batch_events: int = 1000
    max_page_size: int = 1000


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (e.g. "events[3].start_call.call_id") and why, for people."""

    field: str
    description: str


# The payload fields of co-browsing events; every other payload is a general event.
_COBROWSE_PAYLOADS = frozenset(
    {"click", "scroll", "form", "input", "page_change", "selection", "custom_event"}
)

# Identifiers become parts of storage keys ("<tenant>/<session>/<seq>"), so "/" and anything else
# that could make two keys collide or need escaping is kept out of them.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")
_IDENTIFIER_RULE = "must start with a letter or digit and hold only letters, digits and . _ : @ -"
# Identifiers seen lately and whether _IDENTIFIER matches each (see _Checker.identifier).
_WELL_FORMED: dict[str, bool] = {}
_MAX_REMEMBERED = 4096

# C0, DEL and C1: invisible in logs and tools, and a way to forge lines in exported text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Free text may span lines (TAB, LF, CR), but no other control: NUL ends C strings in tools
# downstream, ESC drives terminals, and none of them is typed by people.
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unicode categories an id never needs and that make two ids look alike or reorder what a tool
# prints: controls (Cc), format characters such as bidi overrides and zero-width joiners (Cf),
# line and paragraph separators (Zl, Zp), and lone surrogates (Cs).
_ID_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

# google.protobuf.Timestamp's own range (years 0001-9999), narrowed to start at the epoch: a
# pre-1970 time on an audit event is a client clock bug, and drivers differ on negative BSON dates.
_MIN_SECONDS = 0
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_MAX_NANOS = 999_999_999
# The same range in milliseconds since the epoch, for times that tokens carry.
MAX_MILLIS = _MAX_SECONDS * 1000 + 999
_TIME_RANGE = "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"

_REQUIRED = "required"


# str.isprintable() is False for every character of the Unicode categories Other (Cc, Cf, Cs,
# Co, Cn) and Separator (Zs but the ASCII space, Zl, Zp): a printable string holds none of what
# the checks below look for, and saying so is one C call (0.05 against 0.15-0.2 us for a regex).


def id_character_problem(value: str) -> str | None:
    """Why `value` cannot be an id-like field (a customer id, an element name), or None."""
    if value.isprintable():
        return None
    if value.isascii():
        # The common case needs no per-character lookup.
        return None if _CONTROL.search(value) is None else "must not contain control characters"
    for char in value:
        if unicodedata.category(char) in _ID_FORBIDDEN_CATEGORIES:
            return f"must not contain control, format or separator characters (U+{ord(char):04X})"
    return None


def text_character_problem(value: str) -> str | None:
    """Why `value` cannot be free text (a status, a page name, typed input), or None."""
    if value.isprintable():
        return None
    match = _TEXT_CONTROL.search(value)
    if match is None:
        return None
    code = ord(match.group())
    return f"must not contain control characters other than tab and line breaks (U+{code:04X})"


def is_cobrowse_payload(payload_field: str) -> bool:
    """Whether an AuditEvent payload oneof field name is one of the seven co-browsing events."""
    return payload_field in _COBROWSE_PAYLOADS


class _Checker:
    """Collects the violations of one request; built per call so that nothing is shared."""

    def __init__(self, limits: Limits, base: str = "") -> None:
        self.limits = limits
        self.base = base  # the path of what is checked; the checks' paths are relative to it
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(self.base + field, description))

    def identifier(self, path: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                self.add(path, _REQUIRED)
            return
        # Length first, so that an oversize value gets one clear violation and no regex scan.
        if len(value) > self.limits.max_id_length:
            self.add(path, f"must be at most {self.limits.max_id_length} characters")
            return
        # A tenant, its users and its sessions recur from event to event: the rule's answer is
        # remembered (a dict lookup, 0.04 against 0.15-0.25 us for the regex).
        well_formed = _WELL_FORMED.get(value)
        if well_formed is None:
            if len(_WELL_FORMED) >= _MAX_REMEMBERED:
                _WELL_FORMED.clear()  # bounded: an odd client sending new ids costs only time
            well_formed = _WELL_FORMED[value] = _IDENTIFIER.fullmatch(value) is not None
        if not well_formed:
            self.add(path, _IDENTIFIER_RULE)

    def plain_id(self, path: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                self.add(path, _REQUIRED)
            return
        if len(value) > self.limits.max_id_length:
            self.add(path, f"must be at most {self.limits.max_id_length} characters")
        elif (problem := id_character_problem(value)) is not None:
            self.add(path, problem)

    def short_string(self, path: str, value: str) -> None:
        # Filter values are only compared with stored ids; an impossible value just matches nothing.
        if len(value) > self.limits.max_id_length:
            self.add(path, f"must be at most {self.limits.max_id_length} characters")

    def text(self, path: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                self.add(path, _REQUIRED)
            return
        if len(value) > self.limits.max_text_length:
            self.add(path, f"must be at most {self.limits.max_text_length} characters")
        elif (problem := text_character_problem(value)) is not None:
            self.add(path, problem)

    def timestamp(self, path: str, ts: timestamp_pb2.Timestamp) -> bool:
        if not 0 <= ts.nanos <= _MAX_NANOS:
            self.add(path, f"nanos must be between 0 and {_MAX_NANOS}")
            return False
        if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
            self.add(path, _TIME_RANGE)
            return False
        return True

    def enum(self, path: str, number: int, descriptor: EnumDescriptor, *, zero_ok: bool) -> None:
        # proto3 keeps numbers it does not know, so the descriptor is the only authority.
        if number == 0:
            if not zero_ok:
                self.add(path, _REQUIRED)
        elif number not in descriptor.values_by_number:
            self.add(path, f"unknown enum value {number}")

    def id_list(self, path: str, items: Sequence[str]) -> None:
        if len(items) > self.limits.max_list_items:
            # One violation instead of one per item keeps the answer small for a huge list.
            self.add(path, f"must have at most {self.limits.max_list_items} items")
            return
        for i, item in enumerate(items):
            self.plain_id(f"{path}[{i}]", item, required=True)

    def event_types(self, path: str, items: Sequence[int]) -> None:
        if len(items) > self.limits.max_list_items:
            self.add(path, f"must have at most {self.limits.max_list_items} items")
            return
        for i, number in enumerate(items):
            if number == enums_pb2.EVENT_TYPE_UNSPECIFIED:
                self.add(f"{path}[{i}]", "must not be EVENT_TYPE_UNSPECIFIED")
            else:
                self.enum(f"{path}[{i}]", number, enums_pb2.EventType.DESCRIPTOR, zero_ok=False)

    def free_form(self, path: str, message: struct_pb2.Struct | struct_pb2.Value) -> None:
        size = message.ByteSize()
        if size > self.limits.max_struct_bytes:
            self.add(path, f"must be at most {self.limits.max_struct_bytes} bytes serialized")
            return
        # Free-form data is stored and shown as JSON, which has no NaN or infinity, and its
        # keys and strings are free text; an iterative walk because the client chooses the depth.
        stack: list[struct_pb2.Value] = []
        structs: list[struct_pb2.Struct] = []
        if isinstance(message, struct_pb2.Struct):
            structs.append(message)
        else:
            stack.append(message)
        while stack or structs:
            if structs:
                struct = structs.pop()
                for key, item in struct.fields.items():
                    if (problem := text_character_problem(key)) is not None:
                        self.add(path, f"keys {problem}")
                        return
                    stack.append(item)
                continue
            value = stack.pop()
            kind = value.WhichOneof("kind")
            if kind == "number_value" and not math.isfinite(value.number_value):
                self.add(path, "must not contain NaN or infinite numbers")
                return
            if kind == "string_value" and (problem := text_character_problem(value.string_value)):
                self.add(path, f"strings {problem}")
                return
            if kind == "struct_value":
                structs.append(value.struct_value)
            elif kind == "list_value":
                stack.extend(value.list_value.values)

    def element(self, path: str, element: payloads_pb2.Element) -> None:
        if not element.name and not element.id:
            self.add(path, "name or id required")
            return
        self.plain_id(f"{path}.name", element.name, required=False)
        self.plain_id(f"{path}.id", element.id, required=False)

    def required_element(self, path: str, present: bool, element: payloads_pb2.Element) -> None:
        if not present:
            self.add(path, _REQUIRED)
        else:
            self.element(path, element)


def validate_event(
    event: audit_event_pb2.AuditEvent,
    path: str,
    limits: Limits,
    serialized: bytes | None = None,
) -> list[FieldViolation]:
    """All violations of one event to be stored; `path` prefixes every field path.
    `serialized`: the event's serialization, when the caller has it (the writer needs it too)."""
    # The native checker passes most events at once (in process 1.3 against 4.1-4.4 us, the
    # serialization included); the checks below then run only for what it cannot vouch for,
    # and name each violation.
    if serialized is None:
        serialized = event.SerializeToString()
    if _native_validator(limits).valid(serialized):
        return []
    return event_violations(event, path, limits)


def vouched_events(serialized: list[bytes], limits: Limits) -> list[bool]:
    """For each serialized event of a batch, whether the native checker vouches that
    validate_event finds nothing wrong with it (in one call; the others are for
    event_violations to name what is wrong, if anything)."""
    return _native_validator(limits).valid_each(serialized)


def batch_violations(
    events: list[audit_event_pb2.AuditEvent], serialized: list[bytes], limits: Limits
) -> dict[int, list[FieldViolation]]:
    """validate_event of the events of a batch (`serialized`: their serializations), with the
    native checker asked once for the whole batch: the violations of each event that has any,
    by its index (the others are not there)."""
    vouched = vouched_events(serialized, limits)
    # The events the checker does not vouch for, by C-level iterators: a comprehension over
    # every event cost 0.2 us an event in a profile, where almost every one is vouched for.
    unsure = itertools.compress(range(len(vouched)), map(operator.not_, vouched))
    found: dict[int, list[FieldViolation]] = {}
    for index in unsure:
        violations = event_violations(events[index], "", limits)
        if violations:
            found[index] = violations
    return found


def event_violations(
    event: audit_event_pb2.AuditEvent, path: str, limits: Limits
) -> list[FieldViolation]:
    """validate_event by the rules below alone."""
    # Field paths below are literals relative to the event, joined to `path` only for a
    # violation, and each payload has a function of its own (_PAYLOAD_CHECKS). With the paths
    # formatted up front and a `match` on the payload's name, these checks cost 3.3 against
    # 3.0 us a general event and 4.9 against 4.5 a co-browsing one (bench.event_cost).
    c = _Checker(limits, path)
    payload = event.WhichOneof("payload")
    cobrowse: bool | None = None if payload is None else is_cobrowse_payload(payload)

    # Output-only fields (receive_time, event_type, sequence, input.masked) are not checked:
    # the server overwrites them, and clients may echo back an event they read.
    c.identifier(".id", event.id, required=False)
    c.identifier(".tenant_id", event.tenant_id, required=True)
    # Only general events must name their actor; without a payload the kind is unknown.
    c.identifier(".tenant_user_id", event.tenant_user_id, required=cobrowse is False)
    if event.HasField("occur_time"):
        c.timestamp(".occur_time", event.occur_time)

    has_context = event.HasField("cobrowse")
    if cobrowse is False and has_context:
        c.add(".cobrowse", "only co-browsing events carry a co-browsing context")
    elif cobrowse is True and not has_context:
        c.add(".cobrowse", _REQUIRED)
    elif has_context:
        ctx = event.cobrowse
        c.identifier(".cobrowse.session_id", ctx.session_id, required=True)
        c.enum(".cobrowse.actor", ctx.actor, enums_pb2.Actor.DESCRIPTOR, zero_ok=False)

    if payload is None:
        c.add(".payload", _REQUIRED)
    else:
        _PAYLOAD_CHECKS[payload](c, event)

    # Last, so that the field-level reasons of an oversize event come first.
    size = event.ByteSize()
    if size > limits.max_event_bytes:
        c.add("", f"must be at most {limits.max_event_bytes} bytes serialized (is {size})")
    return c.violations


def placed(path: str, violations: list[FieldViolation]) -> list[FieldViolation]:
    """Violations found with the path "" put under `path`: a batch checks each event with "" and
    names its place only when something is wrong (formatting "events[i]" for every event cost
    0.1-0.2 us an event)."""
    return [FieldViolation(path + v.field, v.description) for v in violations]


# One check per payload field, each with its paths written out. A `match` on the field's name
# compared it with every case before it, and the co-browsing ones came last.
_PayloadCheck = Callable[[_Checker, audit_event_pb2.AuditEvent], None]


def _start_call(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    sc = event.start_call
    c.plain_id(".start_call.call_id", sc.call_id, required=True)
    c.plain_id(".start_call.customer_id", sc.customer_id, required=True)


def _messenger_send(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    c.plain_id(".messenger_send.customer_id", event.messenger_send.customer_id, required=True)


def _live_view(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    session = event.live_view.cobrowse_session_id
    c.identifier(".live_view.cobrowse_session_id", session, required=True)


def _nothing_to_check(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    pass


def _status_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    sc = event.status_change
    c.plain_id(".status_change.customer_id", sc.customer_id, required=True)
    c.text(".status_change.previous_status", sc.previous_status, required=False)
    c.text(".status_change.status", sc.status, required=True)
    c.plain_id(".status_change.message_id", sc.message_id, required=False)


def _role_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    rc = event.role_change
    c.plain_id(".role_change.role_name", rc.role_name, required=True)
    affected = rc.affected_tenant_user_id
    c.plain_id(".role_change.affected_tenant_user_id", affected, required=True)


def _permission_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    pc = event.permission_change
    c.plain_id(".permission_change.role_name", pc.role_name, required=True)
    c.id_list(".permission_change.permissions", pc.permissions)


def _plugin_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    pc = event.plugin_change
    c.plain_id(".plugin_change.plugin", pc.plugin, required=True)
    if pc.HasField("configuration"):
        c.free_form(".plugin_change.configuration", pc.configuration)


def _settings_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    sc = event.settings_change
    c.plain_id(".settings_change.section", sc.section, required=True)
    if sc.HasField("configuration"):
        c.free_form(".settings_change.configuration", sc.configuration)


def _meeting_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    mc = event.meeting_change
    c.enum(".meeting_change.action", mc.action, enums_pb2.MeetingAction.DESCRIPTOR, zero_ok=False)
    if not mc.HasField("conference"):
        c.add(".meeting_change.conference", _REQUIRED)
        return
    conf = mc.conference
    cp = ".meeting_change.conference"
    c.plain_id(f"{cp}.id", conf.id, required=True)
    c.text(f"{cp}.title", conf.title, required=False)
    start_ok = conf.HasField("start_time") and c.timestamp(f"{cp}.start_time", conf.start_time)
    end_ok = conf.HasField("end_time") and c.timestamp(f"{cp}.end_time", conf.end_time)
    if start_ok and end_ok and _before(conf.end_time, conf.start_time):
        c.add(f"{cp}.end_time", "must not be before start_time")
    if conf.HasField("extra"):
        c.free_form(f"{cp}.extra", conf.extra)


def _conference_agent(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    ca = event.conference_agent
    c.plain_id(".conference_agent.call_id", ca.call_id, required=True)
    c.plain_id(".conference_agent.customer_id", ca.customer_id, required=True)


def _conference_recording(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    cr = event.conference_recording
    c.plain_id(".conference_recording.call_id", cr.call_id, required=True)
    c.plain_id(".conference_recording.customer_id", cr.customer_id, required=True)
    c.id_list(".conference_recording.joined_agent_ids", cr.joined_agent_ids)
    c.id_list(".conference_recording.tags", cr.tags)


def _click(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    click = event.click
    c.required_element(".click.element", click.HasField("element"), click.element)


def _scroll(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    scroll = event.scroll
    if not scroll.HasField("position"):
        c.add(".scroll.position", _REQUIRED)
    else:
        position = scroll.position
        for name, number in (("top", position.top), ("left", position.left)):
            if not math.isfinite(number):
                c.add(f".scroll.position.{name}", "must be a finite number")
    # No element means the whole page scrolled.
    if scroll.HasField("element"):
        c.element(".scroll.element", scroll.element)


def _form(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    form = event.form
    c.required_element(".form.form", form.HasField("form"), form.form)


def _input(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    inp = event.input
    c.text(".input.text", inp.text, required=False)
    c.required_element(".input.element", inp.HasField("element"), inp.element)


def _page_change(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    pc = event.page_change
    c.text(".page_change.page_name", pc.page_name, required=True)
    c.text(".page_change.url", pc.url, required=False)


def _selection(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    sel = event.selection
    has_element = sel.HasField("element")
    if not sel.selected_text and not has_element:
        c.add(".selection", "selected_text or element required")
    c.text(".selection.selected_text", sel.selected_text, required=False)
    if has_element:
        c.element(".selection.element", sel.element)


def _custom_event(c: _Checker, event: audit_event_pb2.AuditEvent) -> None:
    ce = event.custom_event
    c.plain_id(".custom_event.event_type", ce.event_type, required=True)
    if ce.HasField("value"):
        c.free_form(".custom_event.value", ce.value)


_PAYLOAD_CHECKS: dict[str, _PayloadCheck] = {
    "start_call": _start_call,
    "messenger_send": _messenger_send,
    "live_view": _live_view,
    "logged_in": _nothing_to_check,
    "online_status_online": _nothing_to_check,
    "online_status_offline": _nothing_to_check,
    "status_change": _status_change,
    "role_change": _role_change,
    "permission_change": _permission_change,
    "plugin_change": _plugin_change,
    "settings_change": _settings_change,
    "meeting_change": _meeting_change,
    "conference_agent": _conference_agent,
    "conference_recording": _conference_recording,
    "click": _click,
    "scroll": _scroll,
    "form": _form,
    "input": _input,
    "page_change": _page_change,
    "selection": _selection,
    "custom_event": _custom_event,
}


# The payload checks above as the native checker (service/native: Validator) takes them: per
# payload, in its function's order, (kind, field, required, the message's fields it reads).
# tests/unit/test_native_validation.py holds the two to the same answers.
_NativeCheck = tuple[str, str, bool, tuple[str, ...]]
_ELEMENT = ("name", "id")
_NATIVE_CHECKS: dict[str, list[_NativeCheck]] = {
    "start_call": [("plain_id", "call_id", True, ()), ("plain_id", "customer_id", True, ())],
    "messenger_send": [("plain_id", "customer_id", True, ())],
    "live_view": [("identifier", "cobrowse_session_id", True, ())],
    "logged_in": [],
    "online_status_online": [],
    "online_status_offline": [],
    "status_change": [
        ("plain_id", "customer_id", True, ()),
        ("text", "previous_status", False, ()),
        ("text", "status", True, ()),
        ("plain_id", "message_id", False, ()),
    ],
    "role_change": [
        ("plain_id", "role_name", True, ()),
        ("plain_id", "affected_tenant_user_id", True, ()),
    ],
    "permission_change": [
        ("plain_id", "role_name", True, ()),
        ("id_list", "permissions", False, ()),
    ],
    "plugin_change": [("plain_id", "plugin", True, ()), ("free_form", "configuration", False, ())],
    "settings_change": [
        ("plain_id", "section", True, ()),
        ("free_form", "configuration", False, ()),
    ],
    "meeting_change": [
        ("enum", "action", True, ()),
        ("conference", "conference", True, ("id", "title", "start_time", "end_time", "extra")),
    ],
    "conference_agent": [("plain_id", "call_id", True, ()), ("plain_id", "customer_id", True, ())],
    "conference_recording": [
        ("plain_id", "call_id", True, ()),
        ("plain_id", "customer_id", True, ()),
        ("id_list", "joined_agent_ids", False, ()),
        ("id_list", "tags", False, ()),
    ],
    "click": [("element", "element", True, _ELEMENT)],
    "scroll": [
        ("position", "position", True, ("top", "left")),
        ("element", "element", False, _ELEMENT),
    ],
    "form": [("element", "form", True, _ELEMENT)],
    "input": [("text", "text", False, ()), ("element", "element", True, _ELEMENT)],
    "page_change": [("text", "page_name", True, ()), ("text", "url", False, ())],
    "selection": [
        ("either", "selected_text", False, ("element",)),
        ("text", "selected_text", False, ()),
        ("element", "element", False, _ELEMENT),
    ],
    "custom_event": [("plain_id", "event_type", True, ()), ("free_form", "value", False, ())],
}


def _native_row(payload: Descriptor, check: _NativeCheck) -> tuple[str, int, bool, list[int]]:
    """A check with its fields' numbers: the payload's field, then (for a message) the fields
    of that message, or (for an enum) its values other than 0, or (for "either") the other
    payload field."""
    kind, name, required, inner = check
    field = payload.fields_by_name[name]
    if kind == "enum":
        assert field.enum_type is not None
        more = [value.number for value in field.enum_type.values if value.number]
    elif kind == "either":
        more = [payload.fields_by_name[other].number for other in inner]
    else:
        message = field.message_type
        more = [message.fields_by_name[n].number for n in inner] if message is not None else []
    return kind, field.number, required, more


# The native checker of each Limits (one in a server), by identity: hashing a frozen
# dataclass's fields on every event cost 0.2 us an event in the server's profile.
_VALIDATORS: dict[int, tuple[Limits, _native.Validator]] = {}


def _native_validator(limits: Limits) -> _native.Validator:
    known = _VALIDATORS.get(id(limits))
    if known is not None and known[0] is limits:
        return known[1]
    validator = _new_native_validator(limits)
    _VALIDATORS[id(limits)] = (limits, validator)  # keeps `limits` alive: its id stays its own
    return validator


def _new_native_validator(limits: Limits) -> _native.Validator:
    event = audit_event_pb2.AuditEvent.DESCRIPTOR
    payloads: dict[int, tuple[bool, list[tuple[str, int, bool, list[int]]]]] = {}
    for field in event.oneofs_by_name["payload"].fields:
        assert field.message_type is not None
        rows = [_native_row(field.message_type, check) for check in _NATIVE_CHECKS[field.name]]
        payloads[field.number] = (is_cobrowse_payload(field.name), rows)
    numbers = {field.name: field.number for field in event.fields if field.containing_oneof is None}
    actors = [value.number for value in enums_pb2.Actor.DESCRIPTOR.values if value.number]
    sizes = (
        limits.max_id_length,
        limits.max_text_length,
        limits.max_list_items,
        limits.max_event_bytes,
    )
    return _native.Validator(sizes, numbers, actors, payloads)


def _before(a: timestamp_pb2.Timestamp, b: timestamp_pb2.Timestamp) -> bool:
    return (a.seconds, a.nanos) < (b.seconds, b.nanos)


def validate_log_events_size(
    request: service_pb2.LogEventsRequest, limits: Limits
) -> list[FieldViolation]:
    """The batch-size check of LogEvents; each event is checked on its own with validate_event."""
    # An empty batch is a valid no-op: producers flush on a timer and may have nothing to send.
    if len(request.events) > limits.max_batch_events:
        return [FieldViolation("events", f"at most {limits.max_batch_events} events per call")]
    return []


def validate_get_request(
    request: service_pb2.GetEventRequest, limits: Limits
) -> list[FieldViolation]:
    """All violations of a GetEvent request."""
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    c.identifier("id", request.id, required=True)
    return c.violations


def validate_list_request(
    request: service_pb2.ListEventsRequest, limits: Limits
) -> list[FieldViolation]:
    """All violations of a ListEvents request except its page token, which is decoded elsewhere."""
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    _check_filter(c, request.filter)
    c.enum("order", request.order, enums_pb2.SortOrder.DESCRIPTOR, zero_ok=True)
    # Sizes above the maximum are capped by the server rather than rejected (AIP-158).
    if request.page_size < 0:
        c.add("page_size", "must not be negative")
    return c.violations


def _check_filter(c: _Checker, f: service_pb2.EventFilter) -> None:
    start_ok = f.HasField("start_time") and c.timestamp("filter.start_time", f.start_time)
    end_ok = f.HasField("end_time") and c.timestamp("filter.end_time", f.end_time)
    # The range is half-open [start, end), so an equal end would select nothing by construction.
    if start_ok and end_ok and not _before(f.start_time, f.end_time):
        c.add("filter.end_time", "must be after start_time")
    c.event_types("filter.event_types", f.event_types)
    c.short_string("filter.tenant_user_id", f.tenant_user_id)
    c.short_string("filter.customer_id", f.customer_id)
    c.short_string("filter.call_id", f.call_id)
    c.short_string("filter.cobrowse_session_id", f.cobrowse_session_id)
    # ACTOR_UNSPECIFIED means "any actor" in a filter.
    c.enum("filter.actor", f.actor, enums_pb2.Actor.DESCRIPTOR, zero_ok=True)


def validate_tail_request(
    request: service_pb2.TailSessionRequest, limits: Limits
) -> list[FieldViolation]:
    """All violations of a TailSession request except the cursor's content, decoded elsewhere."""
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    c.identifier("session_id", request.session_id, required=True)
    if request.HasField("start_time"):
        c.timestamp("start_time", request.start_time)
    c.event_types("event_types", request.event_types)
    return c.violations


def validate_tenant_request(tenant_id: str, limits: Limits) -> list[FieldViolation]:
    """The violations of a request that names only a tenant."""
    c = _Checker(limits)
    c.identifier("tenant_id", tenant_id, required=True)
    return c.violations


# The most events one ExportEvents response carries (a reader of the ledger reads 1,000 at once).
MAX_EXPORT_EVENTS_PER_MESSAGE = 1_000


def validate_export_request(
    request: service_pb2.ExportEventsRequest, limits: Limits
) -> list[FieldViolation]:
    """All violations of an ExportEvents request except its cursor, decoded elsewhere."""
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    _check_filter(c, request.filter)
    if request.to_sequence < 0:
        c.add("to_sequence", "must not be negative")
    if request.from_sequence < 0:
        c.add("from_sequence", "must not be negative")
    if not 0 <= request.events_per_message <= MAX_EXPORT_EVENTS_PER_MESSAGE:
        c.add(
            "events_per_message",
            f"must be between 0 and {MAX_EXPORT_EVENTS_PER_MESSAGE:,}",
        )
    return c.violations


def validate_tail_events_request(
    request: service_pb2.TailEventsRequest, limits: Limits
) -> list[FieldViolation]:
    """All violations of a TailEvents request except the cursor's content."""
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    c.event_types("event_types", request.event_types)
    return c.violations


# A retention past this is a mistake (a unit mixed up), not a policy.
MAX_RETENTION_SECONDS = 100 * 366 * 86_400


def validate_retention_request(
    request: service_pb2.SetRetentionRequest, limits: Limits
) -> list[FieldViolation]:
    c = _Checker(limits)
    c.identifier("tenant_id", request.tenant_id, required=True)
    seconds = request.retention.seconds
    if seconds < 0 or request.retention.nanos < 0:
        c.add("retention", "must not be negative")
    elif seconds > MAX_RETENTION_SECONDS:
        c.add("retention", "must be at most 100 years")
    return c.violations
