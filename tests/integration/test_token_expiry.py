"""A tail ends when its token expires, with its cursor; the SDK resumes with a fresh token."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer
from tests.conftest import ALL_SCOPES, TEST_KEYS, sdk
from tests.integration.test_tail import click

TENANT = "acme"
SESSION = "cob-1"


async def read_events(tail: Any) -> None:
    async for _ in tail:
        pass


async def read_all(stream: Any, seen: list[int]) -> None:
    async for response in stream:
        seen.extend(e.sequence for e in response.events.events)


@pytest.mark.asyncio
async def test_a_tail_ends_unauthenticated_with_its_cursor_when_the_token_expires(
    server: RunningServer, client: AuditLogClient
) -> None:
    await client.log_events([click(n) for n in range(2)])
    short = TEST_KEYS.mint(TENANT, ALL_SCOPES, ttl_s=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stream = service_pb2_grpc.AuditLogServiceStub(channel).TailSession(
            service_pb2.TailSessionRequest(
                tenant_id=TENANT, session_id=SESSION, from_beginning=True
            ),
            metadata=[("authorization", f"Bearer {short}")],
        )
        seen: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await read_all(stream, seen)
    assert seen == [1, 2]
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(ended.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    assert info.reason == "ERROR_REASON_TOKEN_EXPIRED"
    cursor = [v for k, v in ended.value.trailing_metadata() or () if k == "auditlog-cursor"]
    assert cursor
    assert cursor[0] == info.metadata["cursor"]


@pytest.mark.asyncio
async def test_the_sdk_resumes_an_expired_tail_with_a_fresh_token_without_gap_or_duplicate(
    server: RunningServer, client: AuditLogClient
) -> None:
    minted: list[float] = []

    def tokens() -> str:
        # The first token lives 2 s; every later one an hour.
        ttl = 2 if not minted else 3600
        minted.append(time.time())
        return TEST_KEYS.mint(TENANT, ALL_SCOPES, ttl_s=ttl)

    await client.log_events([click(n) for n in range(3)])
    writes: list[asyncio.Task[object]] = []

    def resumed(error: AuditLogError) -> None:
        # Events written only after the first token ran out reach the tail through the
        # resumed call, with the fresh token.
        assert error.reason == "ERROR_REASON_TOKEN_EXPIRED"
        if not writes:
            writes.append(asyncio.ensure_future(client.log_events([click(n) for n in range(3, 6)])))

    async with AuditLogClient(f"127.0.0.1:{server.port}", token=tokens) as expiring:
        tail = expiring.tail_session(TENANT, SESSION, on_resume=resumed)
        seen: list[int] = []
        async with asyncio.timeout(60):
            async for event in tail:
                seen.append(event.sequence)
                if event.sequence == 6:
                    break
        await asyncio.gather(*writes)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert tail.resumes >= 1
    assert len(minted) >= 2


@pytest.mark.asyncio
async def test_a_fixed_expired_token_is_not_retried_forever(server: RunningServer) -> None:
    expired = TEST_KEYS.mint(TENANT, ALL_SCOPES, ttl_s=-120)
    async with AuditLogClient(f"127.0.0.1:{server.port}", token=expired) as stale:
        tail = stale.tail_session(TENANT, SESSION)
        with pytest.raises(AuditLogError) as refused:
            await read_events(tail)
    assert refused.value.reason == "ERROR_REASON_TOKEN_EXPIRED"
    async with sdk(f"127.0.0.1:{server.port}") as fresh:
        assert [e async for e in fresh.list_events(TENANT)] == []
