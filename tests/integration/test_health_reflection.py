"""The standard services beside AuditLogService: gRPC health checking and server reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from auditlog_service.server import RunningServer

SERVICE = "auditlog.v1.AuditLogService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_FILE = "auditlog/v1/service.proto"
TIMEOUT_S = 10.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ---- health ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_is_serving_once_ready(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
    assert response.status == SERVING


@pytest.mark.asyncio
async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await health.Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT_S
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_health_watch_reports_not_serving_on_graceful_shutdown(
    server: RunningServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT_S * 3)
    first = await watch.read()
    assert first.status == SERVING
    # A long grace period: the open Watch is what keeps the server in its grace period, and
    # the test ends it by cancelling the Watch once the NOT_SERVING update has arrived.
    stopping = asyncio.create_task(server.stop(grace_s=TIMEOUT_S * 2))
    try:
        update = await watch.read()
        assert update != grpc.aio.EOF, "the Watch ended without a NOT_SERVING update"
        assert update.status == NOT_SERVING
    finally:
        watch.cancel()
        await stopping


# ---- reflection ------------------------------------------------------------------------------


async def reflect(
    channel: grpc.aio.Channel,
    requests: Iterable[reflection_pb2.ServerReflectionRequest],
    *,
    service: str = REFLECTION,
) -> list[reflection_pb2.ServerReflectionResponse]:
    # v1 and v1alpha messages are the same on the wire, so one set of classes speaks both.
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter(list(requests)), timeout=TIMEOUT_S)
    responses = [response async for response in call]
    assert await call.code() == grpc.StatusCode.OK
    return responses


def file_descriptors(
    response: reflection_pb2.ServerReflectionResponse,
) -> list[descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("version", [REFLECTION, REFLECTION_V1])
async def test_reflection_lists_the_services(channel: grpc.aio.Channel, version: str) -> None:
    (response,) = await reflect(
        channel, [reflection_pb2.ServerReflectionRequest(list_services="")], service=version
    )
    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, HEALTH, REFLECTION, REFLECTION_V1} <= names


@pytest.mark.asyncio
async def test_reflection_returns_the_service_file_with_its_dependencies(
    channel: grpc.aio.Channel,
) -> None:
    (response,) = await reflect(
        channel, [reflection_pb2.ServerReflectionRequest(file_by_filename=SERVICE_FILE)]
    )
    files = {f.name: f for f in file_descriptors(response)}
    service_file = files[SERVICE_FILE]
    assert service_file.package == "auditlog.v1"
    (service,) = service_file.service
    assert f"{service_file.package}.{service.name}" == SERVICE
    assert {"LogEvent", "LogEvents", "StreamEvents", "GetEvent", "ListEvents"} <= {
        method.name for method in service.method
    }
    # A client with nothing but reflection can build the whole contract from the answer.
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while len(added) < len(files):
        ready = [f for name, f in files.items() if name not in added and set(f.dependency) <= added]
        assert ready, f"dependencies missing from the answer: {set(files) - added}"
        for f in ready:
            pool.Add(f)
            added.add(f.name)
    log_event = pool.FindServiceByName(SERVICE).methods_by_name["LogEvent"]
    assert log_event.input_type.full_name == "auditlog.v1.LogEventRequest"
    assert log_event.output_type.full_name == "auditlog.v1.LogEventResponse"
    event = pool.FindMessageTypeByName("auditlog.v1.AuditEvent")
    assert len(event.oneofs_by_name["payload"].fields) == 21  # one typed payload per event type


@pytest.mark.asyncio
@pytest.mark.parametrize("version", [REFLECTION, REFLECTION_V1])
async def test_reflection_finds_the_file_of_a_symbol(
    channel: grpc.aio.Channel, version: str
) -> None:
    by_service, by_message, unknown = await reflect(
        channel,
        [
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="auditlog.v1.AuditEvent"),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="auditlog.v1.NoSuchThing"
            ),
        ],
        service=version,
    )
    service_file = file_descriptors(by_service)[0]
    assert service_file.name == SERVICE_FILE
    assert [s.name for s in service_file.service] == ["AuditLogService"]
    assert file_descriptors(by_message)[0].name == "auditlog/v1/audit_event.proto"
    assert unknown.WhichOneof("message_response") == "error_response"
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
