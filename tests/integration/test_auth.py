"""Who may call: every RPC x every kind of bad token gets the right code and reason, and a
refused call stores nothing; each token sees exactly its own tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devkeys import DEV_AUDIENCE, DEV_ISSUER
from auditlog_service.server import RunningServer
from tests.conftest import ALL_SCOPES, TEST_KEYS

TENANT = "acme"
Stub = service_pb2_grpc.AuditLogServiceStub
Event = audit_event_pb2.AuditEvent


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "tester",
        "tenant": TENANT,
        "scope": " ".join(ALL_SCOPES),
        "iat": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = None, algorithm: str = "EdDSA") -> str:
    return jwt.encode(
        payload,
        key if key is not None else TEST_KEYS.signing_key(),
        algorithm=algorithm,
        headers={"kid": TEST_KEYS.key_id},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_none() -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": TEST_KEYS.key_id}).encode())
    return f"{header}.{_b64(json.dumps(claims()).encode())}."


def hs256_with_the_public_key() -> str:
    public = (
        TEST_KEYS.signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": TEST_KEYS.key_id}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
UNAUTH = ("UNAUTHENTICATED", "ERROR_REASON_UNAUTHENTICATED")
# (case, authorization metadata or None, expected (code, reason) or None for "allowed")
CASES: list[tuple[str, Callable[[], str | None], tuple[str, str] | None]] = [
    ("no token", lambda: None, UNAUTH),
    ("garbage", lambda: "Bearer not-a-jwt", UNAUTH),
    ("not bearer", lambda: f"Basic {signed(claims())}", UNAUTH),
    ("bad signature", lambda: f"Bearer {signed(claims(), Ed25519PrivateKey.generate())}", UNAUTH),
    ("alg none", lambda: f"Bearer {alg_none()}", UNAUTH),
    ("hs256 with the public key", lambda: f"Bearer {hs256_with_the_public_key()}", UNAUTH),
    (
        "expired",
        lambda: f"Bearer {signed(claims(exp=int(time.time()) - 120))}",
        ("UNAUTHENTICATED", "ERROR_REASON_TOKEN_EXPIRED"),
    ),
    ("not yet valid", lambda: f"Bearer {signed(claims(nbf=int(time.time()) + 600))}", UNAUTH),
    ("wrong issuer", lambda: f"Bearer {signed(claims(iss='someone-else'))}", UNAUTH),
    ("wrong audience", lambda: f"Bearer {signed(claims(aud='another-service'))}", UNAUTH),
    ("no exp", lambda: f"Bearer {signed(claims(exp=None))}", UNAUTH),
    (
        "missing scope",
        lambda: f"Bearer {signed(claims(scope='nothing:useful'))}",
        ("PERMISSION_DENIED", "ERROR_REASON_MISSING_SCOPE"),
    ),
    (
        "other tenant",
        lambda: f"Bearer {signed(claims(tenant='globex'))}",
        ("PERMISSION_DENIED", "ERROR_REASON_TENANT_NOT_ALLOWED"),
    ),
    ("tenant *", lambda: f"Bearer {signed(claims(tenant='*'))}", None),
    ("own tenant", lambda: f"Bearer {signed(claims())}", None),
]


def click(session: str = "cob-1") -> Event:
    return Event(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id="buy")),
    )


def failure(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    reason = ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
    return error.code().name, reason


Call = Callable[[Stub, list[tuple[str, str]]], Awaitable[tuple[str, str] | None]]


async def log_event(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    await stub.LogEvent(service_pb2.LogEventRequest(event=click()), metadata=metadata)
    return None


async def log_events(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    response = await stub.LogEvents(
        service_pb2.LogEventsRequest(events=[click(), click()]), metadata=metadata
    )
    errors = {
        (CODE_NAMES[r.error.code], enums_pb2.ErrorReason.Name(r.error.reason))
        for r in response.results
        if r.WhichOneof("result") == "error"
    }
    # A batch refuses each event of a tenant the token does not cover, on its own.
    assert len(errors) <= 1
    return errors.pop() if errors else None


async def stream_events(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    async def requests() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        for _ in range(2):
            yield service_pb2.StreamEventsRequest(event=click())

    answers = [r async for r in stub.StreamEvents(requests(), metadata=metadata)]
    assert len(answers) == 2  # the stream goes on after a refused event
    errors = {
        (CODE_NAMES[r.error.code], enums_pb2.ErrorReason.Name(r.error.reason))
        for r in answers
        if r.WhichOneof("result") == "error"
    }
    if errors:  # a refusal holds for every event of the stream, not only its first
        assert [r.WhichOneof("result") for r in answers] == ["error", "error"]
    return errors.pop() if errors else None


async def get_event(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    try:
        await stub.GetEvent(
            service_pb2.GetEventRequest(tenant_id=TENANT, id="no-such-id"), metadata=metadata
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None  # allowed: the answer of the read itself
        raise
    return None


async def list_events(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    await stub.ListEvents(service_pb2.ListEventsRequest(tenant_id=TENANT), metadata=metadata)
    return None


async def tail_session(stub: Stub, metadata: list[tuple[str, str]]) -> tuple[str, str] | None:
    call = stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="cob-1", from_beginning=True),
        metadata=metadata,
    )
    async for response in call:
        if response.WhichOneof("kind") == "caught_up":
            call.cancel()
            return None
    return None


RPCS: dict[str, Call] = {
    "LogEvent": log_event,
    "LogEvents": log_events,
    "StreamEvents": stream_events,
    "GetEvent": get_event,
    "ListEvents": list_events,
    "TailSession": tail_session,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("rpc", list(RPCS))
@pytest.mark.parametrize(("case", "authorization", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_every_rpc_refuses_every_bad_token_and_stores_nothing(
    server: RunningServer,
    db: Any,
    rpc: str,
    case: str,
    authorization: Callable[[], str | None],
    expected: tuple[str, str] | None,
) -> None:
    value = authorization()
    metadata = [] if value is None else [("authorization", value)]
    before = await db.events.count_documents({})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = Stub(channel)
        try:
            outcome = await RPCS[rpc](stub, metadata)
        except grpc.aio.AioRpcError as error:
            outcome = failure(error)
    assert outcome == expected, case
    if expected is not None:
        assert await db.events.count_documents({}) == before, "a refused call stored something"


@pytest.mark.asyncio
async def test_an_error_never_echoes_the_token(server: RunningServer) -> None:
    token = signed(claims(aud="another-service"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Stub(channel).ListEvents(
                service_pb2.ListEventsRequest(tenant_id=TENANT),
                metadata=[("authorization", f"Bearer {token}")],
            )
    text = f"{refused.value.details()} {refused.value.trailing_metadata()}"
    assert token not in text
    assert token.split(".")[2] not in text
