"""TLS and mTLS on the gRPC port: the SDK works over TLS, plaintext and foreign clients do not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import payloads_pb2
from auditlog_service.devkeys import DevTls, ensure_dev_tls
from auditlog_service.server import RunningServer, start_server
from tests.conftest import settings_for_test, stop_or_explain, token, unledgered

TENANT = "acme"


@pytest.fixture
def tls(tmp_path: Path) -> DevTls:
    return ensure_dev_tls(tmp_path / "tls")


@pytest.fixture
def foreign_tls(tmp_path: Path) -> DevTls:
    """Another CA, with a client certificate of its own."""
    return ensure_dev_tls(tmp_path / "foreign", ca_name="someone else's CA")


async def _start(mongodb_uri: str, database_name: str, **tls: str) -> RunningServer:
    running = await start_server(
        settings_for_test(mongodb_uri, database_name, listen="localhost:0", **tls)
    )
    await running.ready()
    return running


@pytest_asyncio.fixture
async def tls_server(
    mongodb_uri: str, database_name: str, tls: DevTls
) -> AsyncIterator[RunningServer]:
    running = await _start(
        mongodb_uri, database_name, tls_cert=str(tls.server_cert), tls_key=str(tls.server_key)
    )
    try:
        yield running
    finally:
        await stop_or_explain(running)


@pytest_asyncio.fixture
async def mtls_server(
    mongodb_uri: str, database_name: str, tls: DevTls
) -> AsyncIterator[RunningServer]:
    running = await _start(
        mongodb_uri,
        database_name,
        tls_cert=str(tls.server_cert),
        tls_key=str(tls.server_key),
        tls_client_ca=str(tls.ca_file),
    )
    try:
        yield running
    finally:
        await stop_or_explain(running)


def credentials(ca: DevTls, client: DevTls | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.ca_file.read_bytes(),
        private_key=client.client_key.read_bytes() if client else None,
        certificate_chain=client.client_cert.read_bytes() if client else None,
    )


async def round_trip(client: AuditLogClient) -> None:
    stored = await client.log_cobrowse(
        TENANT, "cob-1", "customer", payloads_pb2.ClickAttributes(element={"id": "buy"})
    )
    assert unledgered(await client.get_event(TENANT, stored.id)) == stored
    assert [e.id async for e in client.list_events(TENANT)] == [stored.id]
    async for event in client.tail_session(TENANT, "cob-1"):
        assert event == stored
        break


@pytest.mark.asyncio
async def test_the_sdk_works_over_tls_with_a_token(tls_server: RunningServer, tls: DevTls) -> None:
    async with AuditLogClient(
        f"localhost:{tls_server.port}", credentials=credentials(tls), token=token()
    ) as client:
        await round_trip(client)


@pytest.mark.asyncio
async def test_a_plaintext_client_is_refused_by_a_tls_server(tls_server: RunningServer) -> None:
    async with AuditLogClient(
        f"localhost:{tls_server.port}", token=token(), timeout_s=3.0
    ) as client:
        with pytest.raises(AuditLogError) as refused:
            await client.get_event(TENANT, "x")
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio
@pytest.mark.parametrize("client_cert", ["none", "other CA"])
async def test_mtls_refuses_clients_without_a_certificate_of_its_ca(
    mtls_server: RunningServer, tls: DevTls, foreign_tls: DevTls, client_cert: str
) -> None:
    creds = credentials(tls, None if client_cert == "none" else foreign_tls)
    async with AuditLogClient(
        f"localhost:{mtls_server.port}", credentials=creds, token=token(), timeout_s=3.0
    ) as client:
        with pytest.raises(AuditLogError) as refused:
            await client.get_event(TENANT, "x")
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio
async def test_mtls_admits_a_client_certificate_of_its_ca(
    mtls_server: RunningServer, tls: DevTls
) -> None:
    async with AuditLogClient(
        f"localhost:{mtls_server.port}", credentials=credentials(tls, tls), token=token()
    ) as client:
        await round_trip(client)
