"""The Prometheus endpoint: scraped over HTTP, its counters follow the RPCs of both transports."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from connectrpc.client import ConnectClient
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.protocol import ProtocolType
from prometheus_client.parser import text_string_to_metric_families

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer
from tests.conftest import sdk, serving, settings_for_test, token
from tests.integration.test_connect_conformance import method_info
from tests.integration.test_tail import SESSION, TENANT, click

# Bound of every wait on a condition (a tick read by the other server, ...).
DEADLINE_S = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:<port>/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that have these labels (whatever their others, such as
    the pid of a worker)."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= have)


async def wait_for_sample(port: int, condition: Callable[[Samples], bool], what: str) -> Samples:
    """Scrapes until `condition` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if condition(samples):
            return samples
        assert loop.time() < deadline, f"never: {what}"  # bound-ok: a deadline on a wait
        await asyncio.sleep(0.05)  # poll interval of a bounded wait on the endpoint


def start_call(number: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        tenant_id=TENANT,
        tenant_user_id="agent-1",
        start_call=payloads_pb2.StartCallAttributes(call_id=f"call-{number}", customer_id="c-1"),
    )


@pytest_asyncio.fixture
async def metered(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    settings = settings_for_test(mongodb_uri, database_name, metrics_listen="127.0.0.1:0")
    async with serving(settings) as running:
        yield running


@pytest_asyncio.fixture
async def metered_client(metered: RunningServer) -> AsyncIterator[AuditLogClient]:
    async with sdk(f"127.0.0.1:{metered.port}") as client:
        yield client


@pytest.mark.asyncio
async def test_rpcs_and_stored_events_are_counted_on_both_transports(
    metered: RunningServer, metered_client: AuditLogClient
) -> None:
    # Metrics are per process and other tests' servers may share it: compare with a first scrape.
    before = await asyncio.to_thread(scrape, metered.metrics_port)

    for number in range(3):
        await metered_client.log_event(start_call(number))
    await metered_client.log_events([click(1), click(2), start_call(3)])
    # A LogEvent over Connect, on the HTTP port.
    async with ConnectClient(
        f"http://127.0.0.1:{metered.http_port}",
        codec=google_protobuf_binary_codec(),
        protocol=ProtocolType.CONNECT,
    ) as connect:
        await connect.execute_unary(
            request=service_pb2.LogEventRequest(event=start_call(4)),
            method=method_info("LogEvent"),
            headers={"authorization": f"Bearer {token()}"},
        )
    # A call without a token: counted with its code.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await service_pb2_grpc.AuditLogServiceStub(channel).LogEvent(
                service_pb2.LogEventRequest(event=start_call(5))
            )

    after = await asyncio.to_thread(scrape, metered.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("auditlog_events_stored_total", type="START_CALL") == 5
    assert delta("auditlog_events_stored_total", type="CLICK") == 2
    assert delta("auditlog_events_stored_total") == 7
    ok = {"code": "OK", "transport": "grpc"}
    assert delta("auditlog_rpcs_total", method="LogEvent", **ok) == 3
    assert delta("auditlog_rpcs_total", method="LogEvents", **ok) == 1
    assert delta("auditlog_rpcs_total", method="LogEvent", code="OK", transport="http-connect") == 1
    assert delta("auditlog_rpcs_total", method="LogEvent", code="UNAUTHENTICATED") == 1
    # The latency histogram counts the same calls, each in some bucket.
    assert delta("auditlog_rpc_duration_seconds_count", method="LogEvent", **ok) == 3
    assert delta("auditlog_rpc_duration_seconds_bucket", method="LogEvent", le="+Inf", **ok) == 3
    # Every stored event went through a group commit and its insert.
    assert delta("auditlog_group_commit_events_sum") == 7
    # Three calls one after the other: a trickle far too light to tune the wait longer.
    shortest_s = metered.settings.group_commit_max_delay_ms / 1000
    assert total(after, "auditlog_group_commit_wait_seconds") == shortest_s
    assert delta("auditlog_group_commit_duration_seconds_count") >= 1  # bound-ok: a count
    inserts = delta("auditlog_db_command_duration_seconds_count", command="insert", outcome="ok")
    assert inserts >= 1  # bound-ok: a count of observations, not a time


@pytest.mark.asyncio
async def test_open_tails_and_tick_lag(
    metered: RunningServer,
    metered_client: AuditLogClient,
    mongodb_uri: str,
    database_name: str,
) -> None:
    port = metered.metrics_port
    before = await asyncio.to_thread(scrape, port)
    tail = metered_client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=SESSION, from_now=True)
    )
    assert (await tail.read()).HasField("caught_up")
    open_now = await asyncio.to_thread(scrape, port)
    assert (
        total(open_now, "auditlog_open_tails", kind="session")
        == total(before, "auditlog_open_tails", kind="session") + 1
    )

    # A second server on the database: its writes reach the first one through ticks, whose lag
    # the first one records once it follows the second one's tick stream (from the second's
    # next heartbeat on: the first writes may come before it), so write until one is recorded.
    async with serving(settings_for_test(mongodb_uri, database_name)) as other:
        lag_count = total(before, "auditlog_tick_lag_seconds_count")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        async with sdk(f"127.0.0.1:{other.port}") as writer:
            number = 0
            while (
                total(await asyncio.to_thread(scrape, port), "auditlog_tick_lag_seconds_count")
                == lag_count
            ):
                assert loop.time() < deadline, "no tick lag recorded"  # bound-ok: a deadline
                number += 1
                await writer.log_event(click(number))
                # The event reached the tail (by tick or probe) before the next one is written.
                response = await tail.read()
                while not response.HasField("events"):
                    response = await tail.read()

    tail.cancel()
    await wait_for_sample(
        port,
        lambda samples: (
            total(samples, "auditlog_open_tails", kind="session")
            == total(before, "auditlog_open_tails", kind="session")
        ),
        "the tail's end counted",
    )
