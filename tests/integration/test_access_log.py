"""One structured access-log line per RPC; never a token, a key or event content in it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from auditlog import AuditLogClient, AuditLogError
from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.server import RunningServer
from tests.conftest import serving, settings_for_test, token

SECRET_TEXT = "card 4111-1111-1111-1111 typed here"


@pytest.mark.asyncio
async def test_each_rpc_writes_one_line_without_tokens_or_content(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    acme_token = token("acme")
    event = audit_event_pb2.AuditEvent(tenant_id="acme")
    event.cobrowse.session_id = "cob-1"
    event.cobrowse.actor = enums_pb2.ACTOR_CUSTOMER
    event.input.text = SECRET_TEXT
    event.input.element.id = "card"
    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        async with AuditLogClient(f"127.0.0.1:{server.port}", token=acme_token) as client:
            await client.log_event(event)
            assert len([e async for e in client.list_events("acme")]) == 1
            with pytest.raises(AuditLogError):
                await client.get_event("globex", "x")
        async with AuditLogClient(f"127.0.0.1:{server.port}") as anonymous:
            with pytest.raises(AuditLogError):
                await anonymous.list_page(service_pb2.ListEventsRequest(tenant_id="acme"))
    lines = [r.getMessage() for r in caplog.records if r.name == "auditlog.access"]
    entries = [json.loads(line) for line in lines]
    assert [(e["method"], e["code"]) for e in entries] == [
        ("LogEvent", "OK"),
        ("ListEvents", "OK"),
        ("GetEvent", "PERMISSION_DENIED"),
        ("ListEvents", "UNAUTHENTICATED"),
    ]
    assert entries[0]["events_stored"] == 1
    assert entries[1]["events_returned"] == 1
    assert entries[0]["tenant"] == "acme"
    assert entries[0]["token_tenant"] == "acme"
    assert entries[0]["peer"].startswith("ipv")
    assert all(e["duration_ms"] >= 0 for e in entries)  # bound-ok: present, not a speed goal
    text = "\n".join(lines)
    for secret in (acme_token, acme_token.split(".")[2], SECRET_TEXT, "4111"):
        assert secret not in text
    print("\n".join(lines))  # shown with -s: what the lines look like


@pytest.mark.asyncio
async def test_a_stream_logs_one_line_with_its_count_when_it_ends(
    server: RunningServer, client: AuditLogClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def requests() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        for _ in range(3):
            yield service_pb2.StreamEventsRequest(
                event=audit_event_pb2.AuditEvent(
                    id=new_event_id(), tenant_id="acme", tenant_user_id="u",
                    logged_in=payloads_pb2.LoggedInAttributes(),
                )
            )  # fmt: skip

    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        acks = [r async for r in client.stub.StreamEvents(requests())]
    assert len(acks) == 3
    entries = [json.loads(r.getMessage()) for r in caplog.records if r.name == "auditlog.access"]
    assert [(e["method"], e["code"], e["events_stored"]) for e in entries] == [
        ("StreamEvents", grpc.StatusCode.OK.name, 3)
    ]


@pytest.mark.asyncio
async def test_with_the_access_log_off_calls_write_no_line(
    mongodb_uri: str, database_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """AUDITLOG_ACCESS_LOG=false: the same calls as above, served alike, and no line."""
    event = audit_event_pb2.AuditEvent(
        id=new_event_id(), tenant_id="acme", tenant_user_id="u",
        logged_in=payloads_pb2.LoggedInAttributes(),
    )  # fmt: skip
    settings = settings_for_test(mongodb_uri, database_name, access_log=False)
    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        async with (
            serving(settings) as quiet,
            AuditLogClient(f"127.0.0.1:{quiet.port}", token=token("acme")) as client,
        ):
            await client.log_event(event)
            assert len([e async for e in client.list_events("acme")]) == 1
            with pytest.raises(AuditLogError):
                await client.get_event("globex", "x")
    assert [r.getMessage() for r in caplog.records if r.name == "auditlog.access"] == []
