"""The SDK's security options on the wire: TLS channel credentials and the bearer token.

The service checks no tokens and serves no TLS yet (that is the security work to come), so what
the SDK sends is observed with a small real gRPC server of the same contract that records each
call's `authorization` metadata; the real service then shows that a token gets in the way of no
kind of call.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer
from tests.conftest import token, unledgered

TENANT = "acme"


class RecordingService(service_pb2_grpc.AuditLogServiceServicer):
    """Answers GetEvent, TailSession and StreamEvents trivially; records `authorization`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    def _record(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata: Any = context.invocation_metadata() or ()
        self.seen.append((method, [v for k, v in metadata if k == "authorization"]))

    async def LogEvent(
        self, request: service_pb2.LogEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.LogEventResponse:
        raise NotImplementedError

    async def LogEvents(
        self, request: service_pb2.LogEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.LogEventsResponse:
        raise NotImplementedError

    async def ListEvents(
        self, request: service_pb2.ListEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.ListEventsResponse:
        raise NotImplementedError

    async def GetEvent(
        self, request: service_pb2.GetEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.GetEventResponse:
        self._record("GetEvent", context)
        return service_pb2.GetEventResponse(
            event=audit_event_pb2.AuditEvent(id=request.id, tenant_id=request.tenant_id)
        )

    async def TailSession(
        self, request: service_pb2.TailSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[service_pb2.TailSessionResponse]:
        self._record("TailSession", context)
        yield service_pb2.TailSessionResponse(
            caught_up=service_pb2.TailCaughtUp(head_sequence=0), cursor="cursor-1"
        )

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[service_pb2.StreamEventsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[service_pb2.StreamEventsResponse]:
        self._record("StreamEvents", context)
        index = 0
        async for request in request_iterator:
            yield service_pb2.StreamEventsResponse(
                request_index=index, ack=service_pb2.EventAck(id=request.event.id)
            )
            index += 1


@dataclass
class Certificate:
    key: bytes
    cert: bytes


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate((tmp_path / "key.pem").read_bytes(), (tmp_path / "cert.pem").read_bytes())


async def serve(recorder: RecordingService, tls: Certificate | None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    service_pb2_grpc.add_AuditLogServiceServicer_to_server(recorder, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials([(tls.key, tls.cert)])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


@pytest.fixture
def recorder() -> RecordingService:
    return RecordingService()


async def every_kind_of_call(client: AuditLogClient) -> None:
    """One unary, one server-streaming and one bidirectional call."""
    assert (await client.get_event(TENANT, "e-1")).id == "e-1"
    tail = client.tail_session(TENANT, "cob-1")
    assert [event async for event in tail] == []
    assert tail.caught_up.is_set()

    async def requests() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        yield service_pb2.StreamEventsRequest(event=audit_event_pb2.AuditEvent(id="s-1"))

    acks = [r.ack.id async for r in client.stub.StreamEvents(requests(), timeout=10)]
    assert acks == ["s-1"]


@pytest.mark.asyncio
async def test_over_tls_the_token_goes_as_call_credentials(
    recorder: RecordingService, certificate: Certificate
) -> None:
    server, port = await serve(recorder, certificate)
    tokens = iter(["t-1", "t-2", "t-3"])
    try:
        async with AuditLogClient(
            f"127.0.0.1:{port}",
            credentials=grpc.ssl_channel_credentials(root_certificates=certificate.cert),
            token=lambda: next(tokens),  # asked for each call, so a rotated token is picked up
        ) as client:
            await every_kind_of_call(client)
        async with AuditLogClient(
            f"127.0.0.1:{port}",
            credentials=grpc.ssl_channel_credentials(root_certificates=certificate.cert),
        ) as client:
            assert (await client.get_event(TENANT, "e-2")).id == "e-2"
    finally:
        await server.stop(None)
    assert recorder.seen == [
        ("GetEvent", ["Bearer t-1"]),
        ("TailSession", ["Bearer t-2"]),
        ("StreamEvents", ["Bearer t-3"]),
        ("GetEvent", []),
    ]


@pytest.mark.asyncio
async def test_without_tls_the_token_goes_as_plain_metadata(recorder: RecordingService) -> None:
    server, port = await serve(recorder, None)
    try:
        async with AuditLogClient(f"127.0.0.1:{port}", token="dev-token") as client:
            await every_kind_of_call(client)
        async with AuditLogClient(f"127.0.0.1:{port}") as client:
            assert (await client.get_event(TENANT, "e-2")).id == "e-2"
    finally:
        await server.stop(None)
    assert recorder.seen == [
        ("GetEvent", ["Bearer dev-token"]),
        ("TailSession", ["Bearer dev-token"]),
        ("StreamEvents", ["Bearer dev-token"]),
        ("GetEvent", []),
    ]


@pytest.mark.asyncio
async def test_a_token_gets_in_the_way_of_no_call_to_the_service(server: RunningServer) -> None:
    async with AuditLogClient(f"127.0.0.1:{server.port}", token=token()) as client:
        stored = await client.log_cobrowse(
            TENANT,
            "cob-1",
            "agent",
            payloads_pb2.ScrollAttributes(position=payloads_pb2.ScrollPosition(top=120)),
            tenant_user_id="agent-1",
        )
        assert unledgered(await client.get_event(TENANT, stored.id)) == stored
        assert [e.id async for e in client.list_events(TENANT)] == [stored.id]
        tail = client.tail_session(TENANT, "cob-1")
        async for event in tail:
            assert event == stored
            break
