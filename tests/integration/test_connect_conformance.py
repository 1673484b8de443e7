"""The HTTP port speaks the gRPC port's contract: every client gets the same answer to a call.

Clients: grpcio on the gRPC port (the reference), grpcio over the HTTP port (gRPC on h2c), the
`connectrpc` Python client (Connect binary and JSON, gRPC-Web), `@connectrpc/connect-node` from
TypeScript (Connect, gRPC-Web, gRPC), `grpcurl` against both ports, and curl with Connect JSON.
An answer is the status code, the message, the google.rpc details (decoded), and the responses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from connectrpc.client import ConnectClient
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.protocol import ProtocolType
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.error_details import CURSOR_TRAILER
from auditlog_service.server import RunningServer
from tests.conftest import sdk, token

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TS_DIR = PROJECT_ROOT / "clients" / "typescript"
SERVICE = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
DETAIL_TYPES: dict[str, type[Message]] = {
    "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
    "google.rpc.BadRequest": error_details_pb2.BadRequest,
    "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
}
ACME_SCOPES = ["events:read", "events:write", "sessions:tail"]
EXPORT_SCOPES = [*ACME_SCOPES, "events:export"]


def require_tool(path: str | None, name: str) -> str:
    """The tool's path; a missing one skips the test here and fails it in CI (which installs it)."""
    if path is None or not Path(path).exists():
        message = f"{name} is not installed (make setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def grpcurl_path() -> str | None:
    local = PROJECT_ROOT / ".tools" / "bin" / "grpcurl"
    return str(local) if local.exists() else shutil.which("grpcurl")


# ---- answers ------------------------------------------------------------------------------------


def canonical(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message), sort_keys=True)


def decoded_detail(type_name: str, value: bytes) -> str:
    detail = DETAIL_TYPES[type_name].FromString(value)
    return f"{type_name} {canonical(detail)}"


@dataclass
class Answer:
    code: str = "OK"
    message: str = ""
    details: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One call: a method, a request, and the token (None: no authorization header)."""

    name: str
    method: str
    request: Message
    token: str | None
    # A server stream that never ends by itself is read until its caught_up marker.
    stop_after_caught_up: bool = False

    @property
    def streams(self) -> bool:
        return bool(SERVICE.methods_by_name[self.method].server_streaming)


def is_caught_up(response: Message) -> bool:
    tails = (service_pb2.TailSessionResponse, service_pb2.TailEventsResponse)
    return isinstance(response, tails) and response.HasField("caught_up")


def response_class(method: str) -> type[Message]:
    return GetMessageClass(SERVICE.methods_by_name[method].output_type)


# ---- the clients -------------------------------------------------------------------------------


async def grpcio_answer(address: str, case: Case) -> Answer:
    answer = Answer()
    metadata = (("authorization", f"Bearer {case.token}"),) if case.token else ()
    method = f"/{SERVICE.full_name}/{case.method}"
    parse = response_class(case.method).FromString
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            if case.streams:
                stream = channel.unary_stream(method, response_deserializer=parse)
                call = stream(case.request.SerializeToString(), metadata=metadata)
                async for response in call:
                    answer.responses.append(canonical(response))
                    if case.stop_after_caught_up and is_caught_up(response):
                        call.cancel()
                        break
            else:
                unary = channel.unary_unary(method, response_deserializer=parse)
                response = await unary(case.request.SerializeToString(), metadata=metadata)
                answer.responses.append(canonical(response))
        except grpc.aio.AioRpcError as error:
            answer.code = error.code().name
            answer.message = error.details() or ""
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            if status is not None:
                answer.details = [decoded_detail(d.TypeName(), d.value) for d in status.details]
    return answer


def method_info(name: str) -> MethodInfo[Any, Any]:
    method = SERVICE.methods_by_name[name]
    return MethodInfo(
        name=name,
        service_name=SERVICE.full_name,
        input=GetMessageClass(method.input_type),
        output=GetMessageClass(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )


async def connectrpc_answer(
    base_url: str, case: Case, protocol: ProtocolType, *, json_codec: bool = False
) -> Answer:
    answer = Answer()
    headers = {"authorization": f"Bearer {case.token}"} if case.token else {}
    codec = google_protobuf_json_codec() if json_codec else google_protobuf_binary_codec()
    info = method_info(case.method)
    async with ConnectClient(base_url, codec=codec, protocol=protocol) as client:
        try:
            if case.streams:
                responses = client.execute_server_stream(
                    request=case.request, method=info, headers=headers
                )
                try:
                    async for response in responses:
                        answer.responses.append(canonical(response))
                        if case.stop_after_caught_up and is_caught_up(response):
                            break
                finally:
                    await responses.aclose()  # type: ignore[attr-defined]
            else:
                response = await client.execute_unary(
                    request=case.request, method=info, headers=headers
                )
                answer.responses.append(canonical(response))
        except ConnectError as error:
            answer.code = "CANCELLED" if error.code.name == "CANCELED" else error.code.name
            answer.message = error.message
            answer.details = [decoded_detail(d.type_name, d.message_bytes) for d in error.details]
    return answer


def connect_node_answers(
    base_url: str, cases: list[Case], protocol: str
) -> dict[str, tuple[Answer, str | None]]:
    """Every case through the TypeScript script in one node process: answers and cursor trailers."""
    spec = {
        "baseUrl": base_url,
        "calls": [
            {
                "id": case.name,
                "protocol": protocol,
                "method": case.method,
                "token": case.token,
                "request": base64.b64encode(case.request.SerializeToString()).decode(),
                "stopAfter": "caughtUp" if case.stop_after_caught_up else None,
            }
            for case in cases
        ],
    }
    result = subprocess.run(
        ["node", "--import", "tsx", "conformance/connect-calls.ts"],
        cwd=TS_DIR, input=json.dumps(spec), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers: dict[str, tuple[Answer, str | None]] = {}
    for line in result.stdout.splitlines():
        raw = json.loads(line)
        parse = response_class(next(c.method for c in cases if c.name == raw["id"])).FromString
        answer = Answer(
            code=raw["code"],
            message=raw["message"],
            details=[
                decoded_detail(d["type"], base64.b64decode(d["value"])) for d in raw["details"]
            ],
            responses=[canonical(parse(base64.b64decode(r))) for r in raw["responses"]],
        )
        answers[raw["id"]] = (answer, raw["cursorTrailer"])
    return answers


def protoset(path: Path) -> Path:
    """The contract's and google.rpc's descriptors, for grpcurl (no reflection needed)."""
    files: list[FileDescriptor] = []

    def add(file: FileDescriptor) -> None:
        if file in files:
            return
        for dependency in file.dependencies:
            add(dependency)
        files.append(file)

    add(service_pb2.DESCRIPTOR)
    add(error_details_pb2.DESCRIPTOR)
    add(status_pb2.DESCRIPTOR)
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for file in files:
        file.CopyToProto(descriptor_set.file.add())
    path.write_bytes(descriptor_set.SerializeToString())
    return path


def grpcurl_answer(grpcurl: str, descriptors: Path, address: str, case: Case) -> Answer:
    argv = [grpcurl, "-plaintext", "-protoset", str(descriptors), "-format-error"]
    if case.token:
        argv += ["-H", f"authorization: Bearer {case.token}"]
    request = json_format.MessageToJson(case.request, preserving_proto_field_name=True)
    argv += ["-d", request, address, f"{SERVICE.full_name}/{case.method}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    answer = Answer()
    decoder = json.JSONDecoder()
    text = result.stdout.strip()
    while text:
        value, end = decoder.raw_decode(text)
        message = response_class(case.method)()
        json_format.ParseDict(value, message)
        answer.responses.append(canonical(message))
        text = text[end:].strip()
    if result.returncode != 0:
        status = status_pb2.Status()
        json_format.Parse(result.stderr, status)
        answer.code = grpc.StatusCode(
            next(c.value for c in grpc.StatusCode if c.value[0] == status.code)
        ).name
        answer.message = status.message
        answer.details = [decoded_detail(d.TypeName(), d.value) for d in status.details]
    return answer


# ---- the test ----------------------------------------------------------------------------------


@dataclass
class Seeded:
    event_id: str
    stored: audit_event_pb2.AuditEvent
    cases: list[Case]


def click(n: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        tenant_id="acme",
        occur_time={"seconds": 1_780_000_000 + n},
        cobrowse=audit_event_pb2.CobrowseContext(session_id="cob-c", actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(name=f"button {n}")),
    )


@pytest_asyncio.fixture
async def seeded(server: RunningServer) -> AsyncIterator[Seeded]:
    async with sdk(f"127.0.0.1:{server.port}") as writer:
        stored = await seed(writer)
        # Read-your-writes on the ledger: every event has its place before the first answer, so
        # ledger fields and the export are the same for every client.
        await writer.stub.GetCheckpoint(service_pb2.GetCheckpointRequest(tenant_id="acme"))
    acme = token("acme", ACME_SCOPES)
    list_request = service_pb2.ListEventsRequest(
        tenant_id="acme",
        page_size=3,
        filter=service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_CLICK]),
    )
    cases = [
        Case("list a page", "ListEvents", list_request, acme),
        Case("get an event", "GetEvent", service_pb2.GetEventRequest(tenant_id="acme", id=stored.id), acme),  # noqa: E501
        Case("log a retry", "LogEvent", service_pb2.LogEventRequest(event=stored), acme),
        Case("invalid request", "ListEvents", service_pb2.ListEventsRequest(tenant_id="acme", page_size=-1), acme),  # noqa: E501
        Case("missing token", "ListEvents", list_request, None),
        Case("expired token", "ListEvents", list_request, token("acme", ACME_SCOPES, ttl_s=-120)),
        Case("missing scope", "TailSession", service_pb2.TailSessionRequest(tenant_id="acme", session_id="cob-c", from_beginning=True), token("acme", ["events:read"])),  # noqa: E501
        Case("another tenant", "GetEvent", service_pb2.GetEventRequest(tenant_id="globex", id=stored.id), acme),  # noqa: E501
        Case("not found", "GetEvent", service_pb2.GetEventRequest(tenant_id="acme", id="no-such-event"), acme),  # noqa: E501
        Case("tail a session", "TailSession", service_pb2.TailSessionRequest(tenant_id="acme", session_id="cob-c", from_beginning=True), acme, stop_after_caught_up=True),  # noqa: E501
        Case("tail with a bad cursor", "TailSession", service_pb2.TailSessionRequest(tenant_id="acme", session_id="cob-c", cursor="not-a-cursor"), acme),  # noqa: E501
        Case("export the ledger", "ExportEvents", service_pb2.ExportEventsRequest(tenant_id="acme", to_sequence=6), token("acme", EXPORT_SCOPES)),  # noqa: E501
        Case("export without the scope", "ExportEvents", service_pb2.ExportEventsRequest(tenant_id="acme"), acme),  # noqa: E501
        Case("tail the tenant", "TailEvents", service_pb2.TailEventsRequest(tenant_id="acme", from_beginning=True), acme, stop_after_caught_up=True),  # noqa: E501
        Case("verification keys", "GetVerificationKeys", service_pb2.GetVerificationKeysRequest(), acme),  # noqa: E501
        Case("retention", "GetRetention", service_pb2.GetRetentionRequest(tenant_id="acme"), acme),
    ]  # fmt: skip
    yield Seeded(stored.id, stored, cases)


async def seed(writer: AuditLogClient) -> audit_event_pb2.AuditEvent:
    await writer.log_events([click(n) for n in range(5)])
    response = await writer.log_event(
        audit_event_pb2.AuditEvent(
            tenant_id="acme",
            tenant_user_id="agent-7",
            occur_time={"seconds": 1_780_000_100},
            start_call=payloads_pb2.StartCallAttributes(call_id="call-1", customer_id="c-42"),
        )
    )
    return response.event


@pytest.mark.asyncio
async def test_every_client_and_protocol_gets_the_same_answers(
    server: RunningServer, seeded: Seeded, tmp_path: Path
) -> None:
    require_tool(shutil.which("node"), "node")
    grpcurl = require_tool(grpcurl_path(), "grpcurl")
    ensure_typescript_dependencies()
    grpc_address = f"127.0.0.1:{server.port}"
    http_address = f"127.0.0.1:{server.http_port}"
    base_url = f"http://{http_address}"
    cases = seeded.cases

    reference = {case.name: await grpcio_answer(grpc_address, case) for case in cases}
    # The reference itself is what the contract says.
    assert reference["list a page"].code == "OK"
    assert len(json.loads(reference["list a page"].responses[0])["events"]) == 3
    assert reference["log a retry"].code == "OK"
    assert json.loads(reference["log a retry"].responses[0])["alreadyStored"] is True
    assert reference["invalid request"].code == "INVALID_ARGUMENT"
    assert any("page_size" in d for d in reference["invalid request"].details)
    assert reference["missing token"].code == "UNAUTHENTICATED"
    assert "ERROR_REASON_UNAUTHENTICATED" in reference["missing token"].details[0]
    assert "ERROR_REASON_TOKEN_EXPIRED" in reference["expired token"].details[0]
    assert "ERROR_REASON_MISSING_SCOPE" in reference["missing scope"].details[0]
    assert reference["another tenant"].code == "PERMISSION_DENIED"
    assert "ERROR_REASON_TENANT_NOT_ALLOWED" in reference["another tenant"].details[0]
    assert reference["not found"].code == "NOT_FOUND"
    tail = reference["tail a session"]
    assert tail.code == "OK"
    assert "caughtUp" in tail.responses[-1]
    assert sum(r.count('"sequence"') for r in tail.responses) == 5
    assert reference["tail with a bad cursor"].code == "INVALID_ARGUMENT"
    export = reference["export the ledger"]
    assert export.code == "OK"
    assert sum('"event"' in r for r in export.responses) == 6
    assert "ERROR_REASON_MISSING_SCOPE" in reference["export without the scope"].details[0]
    assert sum(r.count('"ledgerSequence"') for r in reference["tail the tenant"].responses) == 6
    assert reference["verification keys"].code == "OK"

    clients: dict[str, Callable[[Case], Any]] = {
        "grpcio, gRPC over the HTTP port": lambda c: grpcio_answer(http_address, c),
        "connectrpc, Connect": lambda c: connectrpc_answer(base_url, c, ProtocolType.CONNECT),
        "connectrpc, Connect JSON": lambda c: connectrpc_answer(
            base_url, c, ProtocolType.CONNECT, json_codec=True
        ),
        "connectrpc, gRPC-Web": lambda c: connectrpc_answer(base_url, c, ProtocolType.GRPC_WEB),
    }
    for client_name, answer_of in clients.items():
        for case in cases:
            assert await answer_of(case) == reference[case.name], (client_name, case.name)

    for protocol in ("connect", "grpc-web", "grpc"):
        answers = await asyncio.to_thread(connect_node_answers, base_url, cases, protocol)
        for case in cases:
            answer, cursor = answers[case.name]
            assert answer == reference[case.name], (f"connect-node, {protocol}", case.name)
            if case.name == "tail with a bad cursor":
                # The resume cursor also reaches the client as a trailer, whatever the protocol.
                assert cursor == "not-a-cursor", protocol

    descriptors = protoset(tmp_path / "auditlog.protoset")
    for port_name, address in (("gRPC port", grpc_address), ("HTTP port", http_address)):
        for case in cases:
            if case.stop_after_caught_up:
                continue  # grpcurl cannot stop a live stream at a marker
            answer = await asyncio.to_thread(grpcurl_answer, grpcurl, descriptors, address, case)
            assert answer == reference[case.name], (f"grpcurl, {port_name}", case.name)


@pytest.mark.asyncio
async def test_curl_posts_json_over_connect(server: RunningServer, seeded: Seeded) -> None:
    """The README's example: a unary RPC is a JSON POST."""
    curl = require_tool(shutil.which("curl"), "curl")
    url = f"http://127.0.0.1:{server.http_port}/auditlog.v1.AuditLogService/GetEvent"
    body = json.dumps({"tenantId": "acme", "id": seeded.event_id})

    async def post(*headers: str) -> tuple[int, dict[str, Any]]:
        argv = [curl, "-sS", "-w", "\n%{http_code}", "-H", "content-type: application/json"]
        for header in headers:
            argv += ["-H", header]
        # Not subprocess.run: the server answers from this test's event loop.
        process = await asyncio.create_subprocess_exec(
            *argv, "-d", body, url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        text, _, status = out.decode().rpartition("\n")
        return int(status), json.loads(text)

    status, answer = await post(f"authorization: Bearer {token('acme', ACME_SCOPES)}")
    assert status == 200
    assert answer["event"]["id"] == seeded.event_id
    assert answer["event"]["startCall"] == {"callId": "call-1", "customerId": "c-42"}
    assert answer["event"]["eventType"] == "EVENT_TYPE_START_CALL"

    status, error = await post()
    assert status == 401
    assert error["code"] == "unauthenticated"
    detail = base64.b64decode(error["details"][0]["value"] + "==")  # Connect omits the padding
    info = error_details_pb2.ErrorInfo.FromString(detail)
    assert info.reason == "ERROR_REASON_UNAUTHENTICATED"


@pytest.mark.asyncio
async def test_cursor_trailer_on_the_grpc_port_and_over_grpc_on_the_http_port(
    server: RunningServer, seeded: Seeded
) -> None:
    request = service_pb2.TailSessionRequest(tenant_id="acme", session_id="cob-c", cursor="x")
    metadata = (("authorization", f"Bearer {token('acme', ACME_SCOPES)}"),)
    for port in (server.port, server.http_port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            tail = channel.unary_stream(
                f"/{SERVICE.full_name}/TailSession",
                response_deserializer=service_pb2.TailSessionResponse.FromString,
            )
            call = tail(request.SerializeToString(), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in call:
                    pass
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            trailers = dict(raised.value.trailing_metadata() or ())
            assert trailers[CURSOR_TRAILER] == "x", port


def ensure_typescript_dependencies() -> None:
    """`npm ci` in clients/typescript when package-lock.json changed since the last install."""
    marker = TS_DIR / "node_modules" / ".installed"
    lock = TS_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TS_DIR, check=True, timeout=600, env={**os.environ, **npm_cache_env()},
    )  # fmt: skip
    marker.touch()


def npm_cache_env() -> dict[str, str]:
    return {"npm_config_cache": str(PROJECT_ROOT / ".tools" / "npm-cache")}
