"""Valid sample events of all 21 types with every input field set, for unit and round-trip tests."""

import datetime as dt
import uuid
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2

AuditEvent = audit_event_pb2.AuditEvent

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    # Whole milliseconds only: BSON dates hold milliseconds, so finer nanos would not round-trip.
    millis = (value - _EPOCH) // dt.timedelta(milliseconds=1)
    seconds, rest = divmod(millis, 1000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1_000_000)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _element(name: str, element_id: str) -> payloads_pb2.Element:
    return payloads_pb2.Element(name=name, id=element_id)


def valid_event_of_each_type(
    tenant_id: str, *, base_time: dt.datetime | None = None
) -> dict[str, AuditEvent]:
    """One valid event per type, keyed by its payload field name, in the contract's field order.

    Every call gets fresh event ids and a fresh co-browsing session (shared by the seven
    co-browsing events and the LIVE_VIEW join), so samples never collide across tests. Occur
    times are `base_time` (timezone-aware; default: now) plus one millisecond per event, in key
    order. Output-only fields (receive_time, event_type, sequence, input.masked) are left unset,
    and input.sensitive is false so that the text round-trips unmasked.
    """
    base = base_time or dt.datetime.now(dt.UTC)
    base = base.replace(microsecond=base.microsecond // 1000 * 1000)
    session_id = f"cb-{uuid.uuid4()}"
    agent = "agent-17@support.acme"
    customer = "cust:0042-7781"
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    conference_start = _timestamp(dt.datetime(2031, 5, 6, 14, 30, 0, 125_000, tzinfo=dt.UTC))
    conference_end = _timestamp(dt.datetime(2031, 5, 6, 15, 45, 30, 999_000, tzinfo=dt.UTC))

    payloads: dict[str, Message] = {
        "start_call": payloads_pb2.StartCallAttributes(call_id=call_id, customer_id=customer),
        "messenger_send": payloads_pb2.MessengerSendAttributes(customer_id=customer),
        "live_view": payloads_pb2.LiveViewAttributes(cobrowse_session_id=session_id),
        "logged_in": payloads_pb2.LoggedInAttributes(),
        "online_status_online": payloads_pb2.OnlineStatusOnlineAttributes(),
        "online_status_offline": payloads_pb2.OnlineStatusOfflineAttributes(),
        "status_change": payloads_pb2.StatusChangeAttributes(
            customer_id=customer,
            previous_status="Unresolved",
            status="Done – résolu ✅",
            message_id="msg/2024/000981",
        ),
        "role_change": payloads_pb2.RoleChangeAttributes(
            role_name="Team Lead (EMEA)", affected_tenant_user_id="agent-23@support.acme"
        ),
        "permission_change": payloads_pb2.PermissionChangeAttributes(
            role_name="Supervisor",
            permissions=["chat:read", "chat:transfer", "calls/record", "reports export"],
        ),
        "plugin_change": payloads_pb2.PluginChangeAttributes(
            plugin="crm/salesforce",
            configuration=_struct(
                {
                    "enabled": True,
                    "sync_interval_seconds": 300,
                    "ratio": 0.25,
                    "endpoint": "https://crm.example.com/api/v2",
                    "fields": ["email", "phone", "company"],
                    "mapping": {"lead": {"owner": "agent", "priority": 2}, "contact": None},
                }
            ),
        ),
        "settings_change": payloads_pb2.SettingsChangeAttributes(
            section="widget",
            configuration=_struct(
                {
                    "color": "#0055ff",
                    "position": {"corner": "bottom-right", "offset": [16, 24]},
                    "greeting": "Hallo! Wie können wir helfen?",
                    "show_avatar": False,
                    "languages": ["de", "en", "fr"],
                    "empty": {},
                }
            ),
        ),
        "meeting_change": payloads_pb2.MeetingChangeAttributes(
            action=enums_pb2.MEETING_ACTION_CREATE_OR_UPDATE,
            conference=payloads_pb2.Conference(
                id="conf-8841",
                title="Quarterly review — ACME × Contoso",
                start_time=conference_start,
                end_time=conference_end,
                extra=_struct(
                    {
                        "room": "Berlin 3.14",
                        "dial_in": {"number": "+49 30 1234567", "pin": "4711"},
                        "attendees": [{"name": "Ada", "optional": False}, {"name": "Linus"}],
                        "recurring": None,
                    }
                ),
            ),
        ),
        "conference_agent": payloads_pb2.ConferenceAgentAttributes(
            call_id=call_id, customer_id=customer
        ),
        "conference_recording": payloads_pb2.ConferenceRecordingAttributes(
            call_id=call_id,
            customer_id=customer,
            joined_agent_ids=[agent, "agent-23@support.acme", "supervisor-2"],
            tags=["quality", "onboarding call", "priority/high"],
        ),
        "click": payloads_pb2.ClickAttributes(element=_element("Buy now", "buy-btn")),
        "scroll": payloads_pb2.ScrollAttributes(
            position=payloads_pb2.ScrollPosition(top=1234.5, left=16.25),
            element=_element("Product list", "product-list"),
        ),
        "form": payloads_pb2.FormAttributes(form=_element("checkout", "checkout-form")),
        "input": payloads_pb2.InputAttributes(
            text="Musterstraße 12, 10115 Berlin",
            element=_element("Street address", "addr-street"),
            sensitive=False,
        ),
        "page_change": payloads_pb2.PageChangeAttributes(
            page_name="Checkout – Step 2 of 3",
            url="https://shop.example.com/checkout/step-2?cart=81f3&lang=de#shipping",
        ),
        "selection": payloads_pb2.SelectionAttributes(
            selected_text="Free shipping on orders over 50 €",
            element=_element("Shipping note", "shipping-note"),
        ),
        "custom_event": payloads_pb2.CustomEventAttributes(
            event_type="coupon_applied",
            value=struct_pb2.Value(
                struct_value=_struct(
                    {"code": "SPRING24", "discount": 12.5, "items": [1, 2, 3], "first": True}
                )
            ),
        ),
    }
    # Co-browsing actors alternate so that both values are exercised.
    actors = {
        "click": enums_pb2.ACTOR_CUSTOMER,
        "scroll": enums_pb2.ACTOR_CUSTOMER,
        "form": enums_pb2.ACTOR_CUSTOMER,
        "input": enums_pb2.ACTOR_AGENT,
        "page_change": enums_pb2.ACTOR_CUSTOMER,
        "selection": enums_pb2.ACTOR_AGENT,
        "custom_event": enums_pb2.ACTOR_AGENT,
    }

    events: dict[str, AuditEvent] = {}
    for i, (field, payload) in enumerate(payloads.items()):
        event = AuditEvent(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            tenant_user_id=agent,
            occur_time=_timestamp(base + dt.timedelta(milliseconds=i)),
        )
        if field in actors:
            event.cobrowse.session_id = session_id
            event.cobrowse.actor = actors[field]
        getattr(event, field).CopyFrom(payload)
        events[field] = event
    return events
